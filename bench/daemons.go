package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a daemon the suite started, in its own process group.
type proc struct {
	b    *bench
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// spawn starts bin with args, its output appended to logPath.
func (b *bench) spawn(name, logPath, bin string, args ...string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{b: b, name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs[p] = true
	b.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after timeout, and waits for the exit.
func (p *proc) stop(timeout time.Duration) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			<-p.done
		}
	}
	p.b.mu.Lock()
	delete(p.b.procs, p)
	p.b.mu.Unlock()
}

// waitFile waits until path exists or p exits.
func (p *proc) waitFile(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited while starting:\n%s", p.name, tail(p.log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v:\n%s", p.name, timeout, tail(p.log, 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cpu returns the CPU time p and its reaped children have used.
func (p *proc) cpu() time.Duration { return pidCPU(p.pid()) }

// pidCPU reads utime+stime+cutime+cstime of pid from /proc (clock ticks
// of 10 ms).
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, k := range []int{11, 12, 13, 14} {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ---------------------------------------------------------------- registry

// registry is Debian's docker-registry on loopback with its own storage,
// logging every response (with its size) as JSON.
type registry struct {
	addr string
	dir  string
	log  string
	p    *proc
}

func (b *bench) startRegistry(ctx context.Context) (*registry, error) {
	dir := filepath.Join(b.cfg.dir, "registry")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	addr := os.Getenv("BENCH_REGISTRY_ADDR")
	if addr == "" {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
`, dir, addr)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	r := &registry{addr: addr, dir: dir, log: filepath.Join(dir, "registry.log")}
	_ = os.Remove(r.log)
	p, err := b.spawn("registry", r.log, "docker-registry", "serve", filepath.Join(dir, "config.yml"))
	if err != nil {
		return nil, err
	}
	r.p = p
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if p.exited() || i > 100 {
			return nil, fmt.Errorf("docker-registry did not start on %s:\n%s", addr, tail(r.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.logf("registry: docker-registry on %s, storage %s/data, log %s", addr, dir, r.log)
	return r, nil
}

// warm reads every stored blob once so that the first measured pull does
// not pay for the registry's disk reads.
func (r *registry) warm() error {
	return filepath.Walk(filepath.Join(r.dir, "data"), func(path string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
}

// logSize is the current end of the registry's log.
func (r *registry) logSize() int64 {
	st, err := os.Stat(r.log)
	if err != nil {
		return 0
	}
	return st.Size()
}

// served sums the bytes of GET responses the registry logged after offset
// (blobs and manifests), and counts the blob GETs.
func (r *registry) served(offset int64) (bytesOut int64, blobGets int, err error) {
	f, err := os.Open(r.log)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"response completed"`)) {
			continue
		}
		var e map[string]any
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		if e["http.request.method"] != "GET" {
			continue
		}
		if w, ok := e["http.response.written"].(float64); ok {
			bytesOut += int64(w)
		}
		if u, _ := e["http.request.uri"].(string); strings.Contains(u, "/blobs/") {
			blobGets++
		}
	}
	return bytesOut, blobGets, sc.Err()
}

// ---------------------------------------------------------------- tools

// instance is one tool's daemons on one state root.
type instance interface {
	tool() string
	// pullCmd returns the command that pulls (and unpacks) ref.
	pullCmd(ref string) *exec.Cmd
	// cpu is the CPU time the daemons have used so far.
	cpu() time.Duration
	stop()
}

const (
	toolSD  = "stevedore"
	toolCTR = "containerd"
)

func (b *bench) startTool(ctx context.Context, tool, root string) (instance, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	if tool == toolSD {
		return b.startStevedore(ctx, root)
	}
	return b.startContainerd(ctx, root)
}

// sdCluster is a gateway (embedded NATS), fetchers, an unpacker and an
// executor on one state root, started as the e2e harness starts them.
type sdCluster struct {
	b     *bench
	root  string
	url   string
	procs []*proc
	debug map[string]string // daemon name → its --metrics address, when started with --pprof
}

const sdNode = "bench"

func (b *bench) startStevedore(ctx context.Context, root string) (*sdCluster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &sdCluster{b: b, root: root, url: fmt.Sprintf("nats://127.0.0.1:%d", port), debug: map[string]string{}}
	start := func(name string, args ...string) (*proc, error) {
		bin := filepath.Join(b.cfg.bin, strings.SplitN(name, "-", 2)[0])
		ready := filepath.Join(root, name+".ready")
		args = append(args, "--root", root, "--node", sdNode, "--ready-file", ready, "--log-level", "info")
		if b.goProfiles {
			mport, err := freePort()
			if err != nil {
				return nil, err
			}
			addr := fmt.Sprintf("127.0.0.1:%d", mport)
			args = append(args, "--metrics", addr, "--pprof")
			c.debug[name] = addr
		}
		p, err := b.spawn("stevedore "+name, filepath.Join(root, name+".log"), bin, args...)
		if err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
		return p, nil
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
	if _, err := start("gateway", "--listen", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		return nil, err
	}
	if err := waitAll(); err != nil {
		c.stop()
		return nil, err
	}
	for i := 1; i <= b.cfg.fetchers; i++ {
		if _, err := start(fmt.Sprintf("fetcher-%d", i), "--nats", c.url); err != nil {
			c.stop()
			return nil, err
		}
	}
	if _, err := start("unpacker", "--nats", c.url); err != nil {
		c.stop()
		return nil, err
	}
	if _, err := start("executor", "--nats", c.url, "--runc-root", filepath.Join(root, "runc")); err != nil {
		c.stop()
		return nil, err
	}
	if err := waitAll(); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func (c *sdCluster) tool() string { return toolSD }

func (c *sdCluster) ctl(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.b.cfg.bin, "ctl"), append([]string{"--nats", c.url}, args...)...)
	cmd.Env = append(os.Environ(), "STEVEDORE_NAMESPACE=default", "STEVEDORE_NODE="+sdNode)
	return cmd
}

func (c *sdCluster) pullCmd(ref string) *exec.Cmd { return c.ctl("pull", "-q", ref) }

func (c *sdCluster) cpu() time.Duration {
	var t time.Duration
	for _, p := range c.procs {
		t += p.cpu()
	}
	return t
}

// proc returns the cluster's process named name ("unpacker", "fetcher-1").
func (c *sdCluster) proc(name string) *proc {
	for _, p := range c.procs {
		if p.name == "stevedore "+name {
			return p
		}
	}
	return nil
}

func (c *sdCluster) stop() {
	// Workers first, the gateway (and its NATS) last.
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(10 * time.Second)
	}
	runcRoot := filepath.Join(c.root, "runc")
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("runc", "--root", runcRoot, "delete", "-f", id).Run()
		}
	}
	unmountUnder(c.root)
}

// ctrd is containerd on its own root, state and socket.
type ctrd struct {
	b    *bench
	root string
	sock string
	p    *proc
}

func (b *bench) startContainerd(ctx context.Context, root string) (*ctrd, error) {
	c := &ctrd{b: b, root: root, sock: filepath.Join(root, "containerd.sock")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "warn"
`, filepath.Join(root, "root"), filepath.Join(root, "state"), c.sock, c.sock+".ttrpc")
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := b.spawn("containerd", filepath.Join(root, "containerd.log"), "containerd", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	c.p = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(c.sock); err == nil {
			if c.ctr("version").Run() == nil {
				return c, nil
			}
		}
		if p.exited() || time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("containerd did not start:\n%s", tail(p.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *ctrd) tool() string { return toolCTR }

func (c *ctrd) ctr(args ...string) *exec.Cmd {
	return exec.Command("ctr", append([]string{"--address", c.sock, "--namespace", "default"}, args...)...)
}

func (c *ctrd) pullCmd(ref string) *exec.Cmd {
	return c.ctr("images", "pull", "--plain-http", ref)
}

func (c *ctrd) cpu() time.Duration { return c.p.cpu() }

func (c *ctrd) stop() {
	// Kill what a run left (none after run --rm), then containerd.
	if out, err := c.ctr("tasks", "ls", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			_ = c.ctr("tasks", "kill", "-s", "KILL", id).Run()
			_ = c.ctr("tasks", "delete", "-f", id).Run()
		}
	}
	c.p.stop(10 * time.Second)
	unmountUnder(c.root)
}
