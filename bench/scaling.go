package main

// Scaling (issue 6): pulls of many distinct images finish proportionally
// faster with more fetcher processes. The fetchers share one durable
// JetStream consumer, so each blob job goes to whichever fetcher is free.
//
// The registry is Debian's docker-registry behind throttleProxy, which
// limits EACH CONNECTION's registry→client bandwidth (BENCH_SCALING_RATE,
// default 4 MiB/s): the bottleneck the scaling claim is about is the
// per-process one, so every fetcher runs with --concurrency 1
// --max-conns-per-registry 1 (one blob, one connection at a time). 8
// distinct images (one ~8 MiB random layer + config each) are pulled with
// `ctl pull --no-unpack`, all 8 started at once, with 1, 2 and 4 fetchers
// on a fresh state root each time (gateway + N fetchers, no unpacker).

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

const (
	scalingImages    = 8
	scalingLayerSize = 8 << 20
)

var scalingFetchers = []int{1, 2, 4}

// scalingRun is what the report says about the scaling scenario's setup.
var scalingRun struct {
	rate  int64 // bytes per second per connection
	runs  int
	bytes int64 // all blobs of the images
}

// scalingOnly is true when BENCH_ONLY asks for nothing but the scaling
// scenario (then the containerd comparison's images are not built).
func (b *bench) scalingOnly() bool { return len(b.cfg.only) == 1 && b.cfg.only["scaling"] }

// hasFS reports whether any figure was measured on fs.
func (b *bench) hasFS(fs string) bool {
	for k := range b.res.m {
		if strings.HasPrefix(k, fs+"|") {
			return true
		}
	}
	return false
}

// throttleProxy forwards TCP connections to upstream, limiting what each
// connection sends back to the client to rate bytes per second.
type throttleProxy struct {
	ln       net.Listener
	upstream string
	rate     int64
	conns    atomic.Int64 // connections accepted
	open     atomic.Int64
	peak     atomic.Int64 // most connections open at once
	down     atomic.Int64 // bytes sent to clients
}

func startThrottleProxy(upstream string, rate int64) (*throttleProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &throttleProxy{ln: ln, upstream: upstream, rate: rate}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p, nil
}

func (p *throttleProxy) addr() string { return p.ln.Addr().String() }

func (p *throttleProxy) close() { _ = p.ln.Close() }

// resetPeak starts counting the peak of open connections afresh.
func (p *throttleProxy) resetPeak() { p.peak.Store(p.open.Load()) }

func (p *throttleProxy) serve(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer u.Close()
	p.conns.Add(1)
	n := p.open.Add(1)
	defer p.open.Add(-1)
	for {
		pk := p.peak.Load()
		if n <= pk || p.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // client → registry: requests, unthrottled
		defer wg.Done()
		_, _ = io.Copy(u, c)
		if tc, ok := u.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	// registry → client: in chunks of 1/50 s, each paced to the rate.
	buf := make([]byte, max(p.rate/50, 512))
	for {
		m, err := u.Read(buf)
		if m > 0 {
			start := time.Now()
			if _, werr := c.Write(buf[:m]); werr != nil {
				break
			}
			p.down.Add(int64(m))
			want := time.Duration(float64(m) / float64(p.rate) * float64(time.Second))
			if el := time.Since(start); el < want {
				time.Sleep(want - el)
			}
		}
		if err != nil {
			break
		}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now()) // end the other direction
	wg.Wait()
}

// scaling measures 8 concurrent fetch-only pulls of distinct images with 1,
// 2 and 4 fetcher processes behind a per-connection bandwidth limit.
func (b *bench) scaling(ctx context.Context) error {
	rate := int64(4 << 20)
	if v := os.Getenv("BENCH_SCALING_RATE"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("BENCH_SCALING_RATE=%q: want bytes per second", v)
		}
		rate = n
	}
	runs, err := strconv.Atoi(env("BENCH_SCALING_RUNS", "3"))
	if err != nil || runs < 1 {
		return fmt.Errorf("BENCH_SCALING_RUNS=%q: want a positive number", os.Getenv("BENCH_SCALING_RUNS"))
	}
	scalingRun.rate, scalingRun.runs = rate, runs

	// Push the images straight to the registry; pull them through the proxy
	// (the registry does not care which host name a client used).
	var refs []string
	var total int64
	for i := 0; i < scalingImages; i++ {
		l, err := testimage.RandomLayer(scalingLayerSize, int64(6000+i))
		if err != nil {
			return err
		}
		img := &testimage.Image{Format: testimage.OCI, Layers: []*testimage.Layer{l}}
		img.Config.Platform.OS, img.Config.Platform.Architecture = "linux", "amd64"
		repo := fmt.Sprintf("bench/scaling-%d:latest", i)
		if _, err := testimage.Push(ctx, b.reg.addr, repo, img); err != nil {
			return fmt.Errorf("push %s: %w", repo, err)
		}
		built, err := img.Build()
		if err != nil {
			return err
		}
		for _, d := range built.Blobs() {
			total += d.Size
		}
		refs = append(refs, repo)
	}
	scalingRun.bytes = total
	if err := b.reg.warm(); err != nil {
		return err
	}
	px, err := startThrottleProxy(b.reg.addr, rate)
	if err != nil {
		return err
	}
	defer px.close()
	for i := range refs {
		refs[i] = px.addr() + "/" + refs[i]
	}
	b.logf("== scaling: %d images, %s in all, through a proxy limiting each connection to %.1f MiB/s (%s → %s)",
		len(refs), mb(total), float64(rate)/(1<<20), px.addr(), b.reg.addr)

	base := filepath.Join(b.cfg.dir, "disk", "runs")
	for i := 0; i < runs; i++ {
		// Rotate the order run by run so no configuration always goes first.
		for j := range scalingFetchers {
			n := scalingFetchers[(i+j)%len(scalingFetchers)]
			if err := ctx.Err(); err != nil {
				return err
			}
			root := filepath.Join(base, fmt.Sprintf("scaling-%df-%d", n, i))
			c, err := b.startFetchCluster(root, n)
			if err != nil {
				return err
			}
			cmds := make([]*exec.Cmd, 0, len(refs))
			for _, ref := range refs {
				cmds = append(cmds, c.ctl("pull", "-q", "--no-unpack", ref))
			}
			syncAll()
			b.waitQuiet()
			conns0, down0 := px.conns.Load(), px.down.Load()
			px.resetPeak()
			wall, _, err := runAll(cmds)
			conns, down, peak := px.conns.Load()-conns0, px.down.Load()-down0, px.peak.Load()
			c.stop()
			if err != nil {
				return fmt.Errorf("scaling, %d fetchers, run %d: %w", n, i+1, err)
			}
			k := fmt.Sprintf("scaling|%d|", n)
			b.res.add(k+"wall", wall.Seconds())
			b.res.add(k+"peak", float64(peak))
			b.res.add(k+"conns", float64(conns))
			b.logf("scaling %d fetcher(s), run %d: %6.2fs  %s through the proxy (%.1f MiB/s), %d connections, at most %d open at once",
				n, i+1, wall.Seconds(), mb(down), float64(down)/wall.Seconds()/(1<<20), conns, peak)
		}
	}
	return nil
}

// startFetchCluster starts a gateway (embedded NATS) and n fetchers, each
// limited to one blob and one registry connection at a time, on root.
func (b *bench) startFetchCluster(root string, n int) (*sdCluster, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &sdCluster{b: b, root: root, url: fmt.Sprintf("nats://127.0.0.1:%d", port)}
	start := func(name, bin string, args ...string) error {
		args = append(args, "--root", root, "--node", sdNode, "--ready-file", filepath.Join(root, name+".ready"), "--log-level", "info")
		p, err := b.spawn("stevedore "+name, filepath.Join(root, name+".log"), filepath.Join(b.cfg.bin, bin), args...)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		return nil
	}
	waitAll := func() error {
		for _, p := range c.procs {
			name := strings.TrimPrefix(p.name, "stevedore ")
			if err := p.waitFile(filepath.Join(root, name+".ready"), 30*time.Second); err != nil {
				return err
			}
		}
		return nil
	}
	if err := start("gateway", "gateway", "--listen", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		return nil, err
	}
	if err := waitAll(); err != nil {
		c.stop()
		return nil, err
	}
	for i := 1; i <= n; i++ {
		if err := start(fmt.Sprintf("fetcher-%d", i), "fetcher", "--nats", c.url, "--concurrency", "1", "--max-conns-per-registry", "1"); err != nil {
			c.stop()
			return nil, err
		}
	}
	if err := waitAll(); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// scalingTable renders the scaling figures (empty when not measured).
func (b *bench) scalingTable(w *strings.Builder) {
	one, ok := b.res.stat("scaling|1|wall")
	if !ok {
		return
	}
	fmt.Fprintf(w, "## Scaling: fetch-only pulls of %d distinct images with more fetcher processes\n\n", scalingImages)
	fmt.Fprintf(w, "%d images (one %s random gzip layer + config each, %s in all), all %d `ctl pull --no-unpack` started at once, "+
		"from docker-registry behind a proxy limiting each connection to %.1f MiB/s. Each fetcher runs with `--concurrency 1 --max-conns-per-registry 1`, "+
		"so one fetcher process is one connection: the per-process bound the scaling is about. Fresh state root (gateway + N fetchers) per run; "+
		"median [min–max] of %d runs.\n\n", scalingImages, mb(scalingLayerSize), mb(scalingRun.bytes), scalingImages, float64(scalingRun.rate)/(1<<20), scalingRun.runs)
	fmt.Fprintf(w, "| fetchers | time | speed-up vs 1 | connections open at once (max) | goal |\n|---|---|---|---|---|\n")
	for _, n := range scalingFetchers {
		st, ok := b.res.stat(fmt.Sprintf("scaling|%d|wall", n))
		if !ok {
			continue
		}
		peak, _ := b.res.stat(fmt.Sprintf("scaling|%d|peak", n))
		sp := one.med / st.med
		g := "—"
		if n == 4 {
			g = "≥ 3× " + verdict(sp >= 3)
		}
		fmt.Fprintf(w, "| %d | %s | %.2f× | %.0f | %s |\n", n, st.dur(), sp, peak.max, g)
	}
	fmt.Fprintf(w, "\n")
}
