package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// suite runs the scenarios with state roots under base, on fs.
type suite struct {
	b    *bench
	fs   string
	base string
}

// order alternates which tool goes first, run by run.
func order(i int) []string {
	if i%2 == 0 {
		return []string{toolSD, toolCTR}
	}
	return []string{toolCTR, toolSD}
}

func (s *suite) key(scen, tool, metric string) string {
	return s.fs + "|" + scen + "|" + tool + "|" + metric
}

// runAll starts cmds at once and waits for all; it returns the wall time
// and the CPU time the commands used.
func runAll(cmds []*exec.Cmd) (time.Duration, time.Duration, error) {
	outs := make([]*bytes.Buffer, len(cmds))
	for i, c := range cmds {
		outs[i] = &bytes.Buffer{}
		c.Stdout, c.Stderr = outs[i], outs[i]
	}
	start := time.Now()
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			for _, started := range cmds[:i] {
				_ = started.Process.Kill()
				_ = started.Wait()
			}
			return 0, 0, err
		}
	}
	var firstErr error
	var cpu time.Duration
	for i, c := range cmds {
		err := c.Wait()
		if c.ProcessState != nil {
			cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
		}
		if err != nil && firstErr == nil {
			out := outs[i].String()
			if len(out) > 2000 {
				out = out[len(out)-2000:]
			}
			firstErr = fmt.Errorf("%s: %w\n%s", strings.Join(c.Args, " "), err, out)
		}
	}
	return time.Since(start), cpu, firstErr
}

// coldPull measures pulling refs at once into fresh state roots.
func (s *suite) coldPull(ctx context.Context, scen string, refs []string) error {
	b := s.b
	for i := 0; i < b.cfg.runs; i++ {
		for _, tool := range order(i) {
			if err := ctx.Err(); err != nil {
				return err
			}
			root := filepath.Join(s.base, "runs", fmt.Sprintf("%s-%s-%d", scen, tool, i))
			inst, err := b.startTool(ctx, tool, root)
			if err != nil {
				return err
			}
			err = s.timedPull(ctx, scen, inst, refs)
			inst.stop()
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", tool, i+1, err)
			}
		}
	}
	return nil
}

func (s *suite) timedPull(ctx context.Context, scen string, inst instance, refs []string) error {
	b := s.b
	tool := inst.tool()
	syncAll()
	b.waitQuiet()
	off := b.reg.logSize()
	cpu0 := inst.cpu()
	reg0 := b.reg.p.cpu()
	busy0, _ := cpuBusy()
	var cmds []*exec.Cmd
	for _, ref := range refs {
		cmds = append(cmds, inst.pullCmd(ref))
	}
	started := time.Now()
	wall, clientCPU, err := runAll(cmds)
	if err != nil {
		return err
	}
	daemonCPU := inst.cpu() - cpu0
	busy1, _ := cpuBusy()
	foreign := busy1 - busy0 - daemonCPU - clientCPU - (b.reg.p.cpu() - reg0)
	syncD := syncAll()
	time.Sleep(300 * time.Millisecond) // let the registry log its last responses
	served, gets, err := b.reg.served(off)
	if err != nil {
		return err
	}
	r := b.res
	r.add(s.key(scen, tool, "wall"), wall.Seconds())
	r.add(s.key(scen, tool, "wall+sync"), (wall + syncD).Seconds())
	r.add(s.key(scen, tool, "cpu"), (daemonCPU + clientCPU).Seconds())
	r.add(s.key(scen, tool, "served"), float64(served))
	r.add(s.key(scen, tool, "blobgets"), float64(gets))
	r.add(s.key(scen, tool, "foreign"), foreign.Seconds())
	r.add("foreign", foreign.Seconds()/wall.Seconds())
	extra := ""
	if c, ok := inst.(*sdCluster); ok {
		if tl, err := c.timeline(ctx, started); err == nil {
			for k, v := range tl {
				r.add(s.key(scen, tool, k), v)
			}
			extra = fmt.Sprintf(" (last blob %.2fs, last layer applied %.2fs, Σfetch %.2fs, Σapply %.2fs)", tl["t-fetched"], tl["t-applied"], tl["sum-fetch"], tl["sum-apply"])
		} else {
			b.logf("  timeline: %v", err)
		}
	}
	b.logf("%s %-10s %-10s %6.2fs  +sync %5.2fs  cpu %5.2fs  others' cpu %5.2fs  registry %s in %d blob GETs%s",
		s.fs, scen, tool, wall.Seconds(), syncD.Seconds(), (daemonCPU + clientCPU).Seconds(), foreign.Seconds(), mb(served), gets, extra)
	return nil
}

// timeline reads the cluster's event log and returns when (seconds after
// start) the pull's stages ended, and the summed durations the workers
// recorded.
func (c *sdCluster) timeline(ctx context.Context, start time.Time) (map[string]float64, error) {
	nc, err := nats.Connect(c.url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "STEVEDORE_EVENTS")
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	tl := map[string]float64{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var e struct {
			Type    string    `json:"type"`
			Time    time.Time `json:"time"`
			Payload struct {
				Duration int64 `json:"duration_ns"`
			} `json:"payload"`
		}
		if json.Unmarshal(m.Data, &e) != nil || e.Time.Before(start) {
			continue
		}
		t := e.Time.Sub(start).Seconds()
		if v, ok := tl["first:"+e.Type]; !ok || t < v {
			tl["first:"+e.Type] = t
		}
		if t > tl["last:"+e.Type] {
			tl["last:"+e.Type] = t
		}
		d := time.Duration(e.Payload.Duration).Seconds()
		switch e.Type {
		case "blob-committed":
			tl["sum-fetch"] += d
		case "layer-applied":
			tl["sum-apply"] += d
			if d > tl["max-apply"] {
				tl["max-apply"] = d
			}
		}
	}
	for k, from := range map[string]string{"t-resolved": "first:descriptor-resolved", "t-fetched": "last:blob-committed", "t-applied": "last:layer-applied", "t-unpacked": "last:image-unpacked"} {
		if v, ok := tl[from]; ok {
			tl[k] = v
		}
	}
	return tl, nil
}

// presentAndRun measures a pull of an image already present and run --rm
// latency on one long-lived instance of each tool, and raw runc for
// reference.
func (s *suite) presentAndRun(ctx context.Context) error {
	b := s.b
	sdi, err := b.startTool(ctx, toolSD, filepath.Join(s.base, "runs", "warm-stevedore"))
	if err != nil {
		return err
	}
	defer sdi.stop()
	cti, err := b.startTool(ctx, toolCTR, filepath.Join(s.base, "runs", "warm-containerd"))
	if err != nil {
		return err
	}
	defer cti.stop()
	sd, ct := sdi.(*sdCluster), cti.(*ctrd)
	present := b.imgs.multiGzip.ref
	bb := b.imgs.busybox.ref
	insts := map[string]instance{toolSD: sd, toolCTR: ct}
	for _, inst := range insts {
		if _, _, err := runAll([]*exec.Cmd{inst.pullCmd(present), inst.pullCmd(bb)}); err != nil {
			return err
		}
	}
	runCmd := func(tool string, i int) *exec.Cmd {
		if tool == toolSD {
			return sd.ctl("run", "--rm", "-q", bb, "true")
		}
		return ct.ctr("run", "--rm", bb, fmt.Sprintf("bench-%d", i), "true")
	}
	// One untimed round of each, so neither pays a first-use cost.
	for _, tool := range []string{toolSD, toolCTR} {
		if _, _, err := runAll([]*exec.Cmd{insts[tool].pullCmd(present)}); err != nil {
			return err
		}
		if _, _, err := runAll([]*exec.Cmd{runCmd(tool, 1000)}); err != nil {
			return err
		}
	}
	syncAll()
	if b.want("present") {
		for i := 0; i < b.cfg.runs; i++ {
			for _, tool := range order(i) {
				b.waitQuiet()
				wall, _, err := runAll([]*exec.Cmd{insts[tool].pullCmd(present)})
				if err != nil {
					return err
				}
				b.res.add(s.key("present", tool, "wall"), wall.Seconds())
				b.logf("%s present    %-10s %6.3fs", s.fs, tool, wall.Seconds())
			}
		}
	}
	if !b.want("run") {
		return nil
	}
	for i := 0; i < b.cfg.runs; i++ {
		for _, tool := range order(i) {
			b.waitQuiet()
			cpu0 := insts[tool].cpu()
			wall, ccpu, err := runAll([]*exec.Cmd{runCmd(tool, i)})
			if err != nil {
				return err
			}
			b.res.add(s.key("run", tool, "wall"), wall.Seconds())
			b.res.add(s.key("run", tool, "cpu"), (insts[tool].cpu() - cpu0 + ccpu).Seconds())
			if tool == toolSD {
				if tl, err := sd.timeline(ctx, time.Now().Add(-wall)); err == nil {
					for k, v := range tl {
						b.res.add(s.key("run", tool, k), v)
					}
				}
			}
			b.logf("%s run --rm   %-10s %6.3fs", s.fs, tool, wall.Seconds())
		}
	}
	return s.runcRef(ctx)
}

// runcRef times raw `runc run` of true in a busybox bundle.
func (s *suite) runcRef(ctx context.Context) error {
	b := s.b
	bundle := filepath.Join(s.base, "runs", "runc-bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	if err := run("tar", "-xzf", b.imgs.busybox.layers[0].path, "-C", rootfs); err != nil {
		return err
	}
	if err := run("runc", "spec", "--bundle", bundle); err != nil {
		return err
	}
	cfgPath := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return err
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = []string{"true"}
	raw, _ = json.MarshalIndent(spec, "", "  ")
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		return err
	}
	state := filepath.Join(s.base, "runs", "runc-state")
	for i := -1; i < b.cfg.runs; i++ {
		cmd := exec.Command("runc", "--root", state, "run", "--bundle", bundle, fmt.Sprintf("bench-runc-%d", i+1))
		b.waitQuiet()
		wall, _, err := runAll([]*exec.Cmd{cmd})
		if err != nil {
			return err
		}
		if i >= 0 { // the first is a warm-up
			b.res.add(s.key("run", "runc", "wall"), wall.Seconds())
		}
	}
	return nil
}

// floor measures the physical limit: decompressing each image's layers
// with the fastest tool here (pigz or zstd) into tar -x, every layer into
// its own fresh directory at once (as an overlay snapshotter can).
func (s *suite) floor(ctx context.Context) error {
	b := s.b
	gz := "gzip"
	if _, err := exec.LookPath("pigz"); err == nil {
		gz = "pigz"
	}
	b.floorTool = gz
	for _, it := range []struct {
		scen string
		im   *image
	}{{"debian", b.imgs.debian}, {"multi-gzip", b.imgs.multiGzip}, {"multi-zstd", b.imgs.multiZstd}} {
		if !b.want(it.scen) && !b.want("floor") {
			continue
		}
		for i := 0; i < b.cfg.runs; i++ {
			dir := filepath.Join(s.base, "floor", fmt.Sprintf("%s-%d", it.scen, i))
			var cmds []*exec.Cmd
			for j, l := range it.im.layers {
				ld := filepath.Join(dir, fmt.Sprintf("l%d", j))
				if err := os.MkdirAll(ld, 0o755); err != nil {
					return err
				}
				dec := gz + " -dc"
				if l.Comp == "zstd" {
					dec = "zstd -dc -q"
				}
				cmds = append(cmds, exec.Command("sh", "-c", fmt.Sprintf(`%s "$1" | tar --numeric-owner -x -C "$2"`, dec), "sh", l.path, ld))
			}
			syncAll()
			b.waitQuiet()
			wall, cpu, err := runAll(cmds)
			if err != nil {
				return err
			}
			syncD := syncAll()
			b.res.add(s.key(it.scen, "floor", "wall"), wall.Seconds())
			b.res.add(s.key(it.scen, "floor", "wall+sync"), (wall + syncD).Seconds())
			b.res.add(s.key(it.scen, "floor", "cpu"), cpu.Seconds())
			b.logf("%s floor      %-10s %6.2fs  +sync %5.2fs", s.fs, it.scen, wall.Seconds(), syncD.Seconds())
		}
	}
	return nil
}

// profile collects a system-wide CPU profile (perf) of each tool's
// multi-layer pull, and times fetch-only pulls to separate the stages.
func (b *bench) profile(ctx context.Context) error {
	s := &suite{b: b, fs: "disk", base: filepath.Join(b.cfg.dir, "disk")}
	b.logf("== profile: perf record -a -g during one multi-layer pull per tool")
	for _, tool := range []string{toolSD, toolCTR} {
		root := filepath.Join(s.base, "runs", "pprof-"+tool)
		b.goProfiles = tool == toolSD
		inst, err := b.startTool(ctx, tool, root)
		b.goProfiles = false
		if err != nil {
			return err
		}
		data := filepath.Join(b.cfg.out, "perf-"+tool+".data")
		syncAll()
		b.waitQuiet()
		perf, err := b.spawn("perf", filepath.Join(b.cfg.out, "perf-"+tool+".log"), "perf", "record", "-a", "-g", "-F", "499", "-o", data)
		if err != nil {
			inst.stop()
			return err
		}
		// Stevedore's daemons also give Go CPU profiles (pprof) of the
		// same pull: where in our code the time goes.
		var goProfs *goProfiler
		if c, ok := inst.(*sdCluster); ok {
			goProfs = b.startGoProfiles(c, goProfileSeconds)
		}
		time.Sleep(500 * time.Millisecond)
		wall, _, err := runAll([]*exec.Cmd{inst.pullCmd(b.imgs.multiGzip.ref)})
		_ = perf.cmd.Process.Signal(os.Interrupt)
		perf.stop(30 * time.Second)
		if goProfs != nil {
			goProfs.wait()
		}
		inst.stop()
		if err != nil {
			return err
		}
		if goProfs != nil {
			b.reportGoProfiles(goProfs)
		}
		b.logf("profiled %s multi-layer pull: %.2fs", tool, wall.Seconds())
		comms := map[string]string{toolSD: "unpacker,fetcher,gateway,ctl", toolCTR: "containerd,ctr,unpigz"}[tool]
		for _, rep := range []struct{ name, sort, comms string }{{"comm", "comm", ""}, {"sym", "comm,dso,sym", comms}} {
			args := []string{"report", "-i", data, "--stdio", "--no-children", "--sort", rep.sort, "--percent-limit", "0.7", "-g", "none"}
			if rep.comms != "" {
				args = append(args, "--comms", rep.comms)
			}
			out, err := exec.Command("perf", args...).Output()
			if err != nil {
				return fmt.Errorf("perf report: %w", err)
			}
			path := filepath.Join(b.cfg.out, fmt.Sprintf("perf-%s-%s.txt", tool, rep.name))
			if err := os.WriteFile(path, out, 0o644); err != nil {
				return err
			}
			b.profiles = append(b.profiles, profileSummary{tool: tool, kind: rep.name, path: path, top: topLines(string(out), 14)})
		}
	}
	// Fetch only: separates fetching from unpacking.
	b.logf("== fetch only: ctl pull --no-unpack vs ctr content fetch (multi-layer gzip)")
	for i := 0; i < b.cfg.runs; i++ {
		for _, tool := range order(i) {
			root := filepath.Join(s.base, "runs", fmt.Sprintf("fetchonly-%s-%d", tool, i))
			inst, err := b.startTool(ctx, tool, root)
			if err != nil {
				return err
			}
			var cmd *exec.Cmd
			if c, ok := inst.(*sdCluster); ok {
				cmd = c.ctl("pull", "-q", "--no-unpack", b.imgs.multiGzip.ref)
			} else {
				cmd = inst.(*ctrd).ctr("content", "fetch", "--plain-http", b.imgs.multiGzip.ref)
			}
			syncAll()
			b.waitQuiet()
			wall, _, err := runAll([]*exec.Cmd{cmd})
			inst.stop()
			if err != nil {
				return err
			}
			b.res.add(s.key("fetch-only", tool, "wall"), wall.Seconds())
			b.logf("disk fetch-only %-10s %6.2fs", tool, wall.Seconds())
		}
	}
	return nil
}

type profileSummary struct {
	tool, kind, path string
	top              []string
}

// topLines returns the first n sample lines of a perf report.
func topLines(report string, n int) []string {
	var out []string
	for _, l := range strings.Split(report, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, strings.Join(strings.Fields(t), " "))
		if len(out) == n {
			break
		}
	}
	return out
}
