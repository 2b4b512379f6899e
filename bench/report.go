package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// results holds every sample by "fs|scenario|tool|metric".
type results struct{ m map[string][]float64 }

func newResults() *results { return &results{m: map[string][]float64{}} }

func (r *results) add(key string, v float64) { r.m[key] = append(r.m[key], v) }

type stat struct {
	med, min, max float64
	n             int
}

func (r *results) stat(key string) (stat, bool) {
	v := append([]float64(nil), r.m[key]...)
	if len(v) == 0 {
		return stat{}, false
	}
	sort.Float64s(v)
	st := stat{min: v[0], max: v[len(v)-1], n: len(v)}
	if len(v)%2 == 1 {
		st.med = v[len(v)/2]
	} else {
		st.med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return st, true
}

func fmtSec(s float64) string {
	switch {
	case s < 0.1:
		return fmt.Sprintf("%.1f ms", s*1000)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

// dur formats a stat of seconds in one unit: "1.23 s [1.10–1.40]".
func (st stat) dur() string {
	switch {
	case st.med < 0.1:
		return fmt.Sprintf("%.1f ms [%.1f–%.1f]", st.med*1000, st.min*1000, st.max*1000)
	case st.med < 1:
		return fmt.Sprintf("%.0f ms [%.0f–%.0f]", st.med*1000, st.min*1000, st.max*1000)
	}
	return fmt.Sprintf("%.2f s [%.2f–%.2f]", st.med, st.min, st.max)
}

func (st stat) num(format string) string {
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", st.med, st.min, st.max)
}

// goal is an issue-6 target: a ratio ceiling, an absolute ceiling (s), or
// an exact bytes ratio.
type goal struct {
	ratio, abs, bytes float64
}

func (g goal) String() string {
	switch {
	case g.ratio > 0:
		return fmt.Sprintf("≤ %.2f×", g.ratio)
	case g.abs > 0:
		return fmt.Sprintf("< %.0f ms", g.abs*1000)
	case g.bytes > 0:
		return fmt.Sprintf("%.2f", g.bytes)
	}
	return "—"
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

var scenarioNames = map[string]string{
	"busybox":    "Cold pull: busybox, 1 small layer (the fixed cost of a pull)",
	"debian":     "Cold pull: Debian minbase, 1 gzip layer",
	"multi-gzip": "Cold pull: 8 layers, gzip (many small files, whiteouts, opaque dirs)",
	"multi-zstd": "Cold pull: the same 8 layers, zstd",
	"shared10":   "10 concurrent pulls of images sharing the Debian base",
	"present":    "Pull of an image already present (8 layers)",
	"run":        "`run --rm busybox true`",
	"fetch-only": "Fetch only, 8 layers gzip (`ctl pull --no-unpack` vs `ctr content fetch`)",
}

var goals = map[string]goal{
	"debian":     {ratio: 0.6},
	"multi-gzip": {ratio: 0.5},
	"multi-zstd": {ratio: 0.5},
	"shared10":   {ratio: 0.25},
	"present":    {abs: 0.05},
	"run":        {ratio: 0.6},
}

func fsTitle(fs string) string {
	if fs == "tmpfs" {
		return "tmpfs (both tools' state roots on one tmpfs mount: the pipeline's own cost)"
	}
	return "root disk (" + fsType("/var/tmp") + ")"
}

// fsType names the filesystem holding path, and says so when it is ext4
// without a journal.
func fsType(path string) string {
	out, err := exec.Command("findmnt", "-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", path).Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) < 2 {
		return "?"
	}
	t := f[0]
	if t == "ext4" {
		if j, err := os.ReadFile("/sys/fs/ext4/" + filepath.Base(f[1]) + "/journal_task"); err == nil && strings.TrimSpace(string(j)) == "<none>" {
			t += " without a journal"
		}
	}
	if len(f) > 2 && strings.Contains(","+f[2]+",", ",discard,") {
		t += ", online discard"
	}
	return t
}

func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return "?"
	}
	return strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
}

// report renders the results as Markdown.
func (b *bench) report() string {
	r := b.res
	var w strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&w, format, args...) }
	kernel := firstLine("uname", "-r")
	p("# Stevedore vs containerd: benchmark results\n\n")
	p("Run %s, %s total. Each figure is the median [min–max] of %d runs; the two tools alternate run by run. "+
		"Ratio = Stevedore ÷ containerd (lower is better for Stevedore).\n\n",
		b.start.Format("2006-01-02 15:04 MST"), time.Since(b.start).Round(time.Second), b.cfg.runs)
	p("Machine: %d CPUs, Linux %s, state roots on %s and on tmpfs. %s (overlayfs snapshotter, driven by `ctr`); %s; "+
		"Stevedore: gateway (embedded NATS) + %d fetchers + unpacker + executor, default flags. Registry: Debian's docker-registry (%s) on loopback.\n\n",
		runtime.NumCPU(), kernel, fsType(b.cfg.dir), firstLine("containerd", "--version"), firstLine("runc", "--version"), b.cfg.fetchers,
		firstLine("docker-registry", "--version"))

	if b.imgs != nil {
		p("## Images\n\n| image | layers | compressed | uncompressed | tar entries |\n|---|---|---|---|---|\n")
		for _, it := range []struct {
			name string
			im   *image
		}{{"Debian bookworm minbase (debootstrap), 1 layer", b.imgs.debian}, {"multi-layer, gzip", b.imgs.multiGzip},
			{"multi-layer, zstd", b.imgs.multiZstd}, {"each of 10 sharing the Debian layer", b.imgs.shared[0]}, {"busybox", b.imgs.busybox}} {
			p("| %s | %d | %s | %s | %d |\n", it.name, len(it.im.layers), mb(it.im.compressed()), mb(it.im.uncompressed()), it.im.entries())
		}
		p("\n")
	}

	for _, fs := range b.cfg.fss {
		if !b.hasFS(fs) {
			continue
		}
		p("## Results: %s\n\n", fsTitle(fs))
		p("| scenario | stevedore median [min–max] | containerd median [min–max] | ratio | goal |\n|---|---|---|---|---|\n")
		for _, scen := range []string{"debian", "multi-gzip", "multi-zstd", "shared10", "bytes", "present", "run", "busybox"} {
			if scen == "bytes" {
				b.bytesRow(&w, fs)
				continue
			}
			sd, ok1 := r.stat(fs + "|" + scen + "|" + toolSD + "|wall")
			ct, ok2 := r.stat(fs + "|" + scen + "|" + toolCTR + "|wall")
			if !ok1 || !ok2 {
				continue
			}
			ratio := sd.med / ct.med
			g, hasGoal := goals[scen]
			gs := "—"
			if hasGoal {
				ok := (g.ratio > 0 && ratio <= g.ratio) || (g.abs > 0 && sd.med < g.abs)
				gs = g.String() + " " + verdict(ok)
			}
			p("| %s | %s | %s | %.2f× | %s |\n", scenarioNames[scen], sd.dur(), ct.dur(), ratio, gs)
		}
		if fs == "disk" {
			for _, scen := range []string{"debian", "multi-gzip", "multi-zstd", "shared10"} {
				sd, ok1 := r.stat(fs + "|" + scen + "|" + toolSD + "|wall+sync")
				ct, ok2 := r.stat(fs + "|" + scen + "|" + toolCTR + "|wall+sync")
				if ok1 && ok2 {
					p("| … %s, then `sync` | %s | %s | %.2f× | (reference) |\n",
						strings.TrimPrefix(scenarioNames[scen], "Cold pull: "), sd.dur(), ct.dur(), sd.med/ct.med)
				}
			}
		}
		if sd, ok := r.stat(fs + "|fetch-only|" + toolSD + "|wall"); ok {
			if ct, ok := r.stat(fs + "|fetch-only|" + toolCTR + "|wall"); ok {
				p("| %s | %s | %s | %.2f× | (reference) |\n", scenarioNames["fetch-only"], sd.dur(), ct.dur(), sd.med/ct.med)
			}
		}
		p("\n")
		b.referenceTable(&w, fs)
		b.cpuTable(&w, fs)
		b.timelineTable(&w, fs)
		b.runTimelineTable(&w, fs)
	}
	b.scalingTable(&w)
	if len(b.profiles) > 0 {
		p("## CPU profile of one multi-layer pull (BENCH_PPROF=1)\n\n")
		p("`perf record -a -g -F 499` during the pull (both tools, every process), and Go CPU profiles of Stevedore's daemons (their `/debug/pprof/profile`, served with `--pprof`) over the same pull; full reports in bench/out/. Top entries (self time):\n\n")
		for _, ps := range b.profiles {
			path := ps.path
			if rel, err := filepath.Rel(b.cfg.repo, path); err == nil && !strings.HasPrefix(rel, "..") {
				path = rel // the report is read from the repository
			}
			p("%s, by %s (`%s`):\n\n```\n%s\n```\n\n", ps.tool, ps.kind, path, strings.Join(ps.top, "\n"))
		}
	}
	if f, ok := r.stat("foreign"); ok {
		b.notes = append(b.notes, fmt.Sprintf("This machine is shared: before each timed run the suite waits (up to %v) until it is under 15%% busy. "+
			"CPU used by other processes during the timed cold pulls, as a share of one CPU: median %.2f, max %.2f; %d timed runs started while the machine was still busy.",
			b.cfg.quietWait, f.med, f.max, b.busyStarts))
	}
	if len(b.notes) > 0 {
		p("## Notes from this run\n\n")
		for _, n := range b.notes {
			p("- %s\n", n)
		}
		p("\n")
	}
	p("## Method\n\n")
	p("- Cold pulls: every run starts the tool's daemons on a fresh state root (`BENCH_DIR/<fs>/runs/<scenario>-<tool>-<run>`), outside the timed region; " +
		"the timed region is the client command only (`ctl pull -q REF` / `ctr images pull --plain-http REF`, which unpacks with overlayfs), from its start to its exit. " +
		"A fresh containerd (its own config.toml, root, state and socket) per run costs about 0.1 s to start and is the only way to make every pull equally cold, so it is used for both tools.\n")
	p("- `sync` runs before each timed region, so one run's dirty pages are not written back during the next. No state root is deleted while measuring: "+
		"on this ext4 (no journal, online discard) creating files is much slower for about a minute after many are deleted, so all roots are removed at the end; roots left by an earlier run are removed at the start, followed by a %v pause.\n", b.cfg.settle)
	p("- The \"then `sync`\" rows add the time `sync(1)` takes right after the pull: what it costs to make the pulled files durable. " +
		"Stevedore syncfs's each snapshot before committing it; containerd 1.6 fsyncs its content blobs and metadata (strace: fsync, fdatasync) but not the unpacked files (no syncfs).\n")
	p("- Present-image pull and run latency use one long-lived instance of each tool that has pulled the images, after one untimed round each. `ctl run --rm -q IMAGE true` vs `ctr run --rm IMAGE ID true`; raw `runc run` of the same busybox rootfs for reference.\n")
	p("- Floor: the same layer blobs decompressed by `%s -dc` or `zstd -dc` into `tar --numeric-owner -x`, one pipeline per layer, all at once, each into a fresh dir on the same filesystem. No digest verification, no fsync.\n", b.floorTool)
	p("- Registry bytes: the sum of `http.response.written` of GET responses in docker-registry's JSON log during the timed region, divided by the bytes of the distinct blobs (manifests, configs, layers) of the 10 images (%s).\n", mb(b.imgsSharedUnique()))
	p("- CPU: utime+stime of the daemons (from /proc, before and after) plus the client's. Stage timeline: the times the Stevedore workers recorded in the events of the pull (read from the JetStream log after the pull), relative to `ctl`'s start.\n")
	p("- Reproduce: `make bench-containerd` (or `scripts/bench-containerd.sh`); `BENCH_RUNS=5`, `BENCH_FS=disk,tmpfs`, `BENCH_ONLY=debian,multi-gzip,...`, `BENCH_PPROF=1`, `BENCH_DIR=/var/tmp/stevedore-bench`, `BENCH_SETTLE=65`, `BENCH_KEEP=1`. See bench/README.md.\n")
	return w.String()
}

func (b *bench) imgsSharedUnique() int64 {
	if b.imgs == nil {
		return 0
	}
	return b.imgs.sharedUnique
}

func (b *bench) bytesRow(w *strings.Builder, fs string) {
	unique := float64(b.imgsSharedUnique())
	if unique == 0 {
		return
	}
	ratios := map[string]stat{}
	for _, tool := range []string{toolSD, toolCTR} {
		v := b.res.m[fs+"|shared10|"+tool+"|served"]
		if len(v) == 0 {
			return
		}
		rr := newResults()
		for _, x := range v {
			rr.add("x", x/unique)
		}
		ratios[tool], _ = rr.stat("x")
	}
	sd := ratios[toolSD]
	ok := math.Abs(sd.max-1) < 0.005 && math.Abs(sd.min-1) < 0.005
	fmt.Fprintf(w, "| … registry bytes served ÷ unique bytes, 10 concurrent pulls | %s | %s | — | 1.00 %s |\n",
		sd.num("%.2f"), ratios[toolCTR].num("%.2f"), verdict(ok))
}

func (b *bench) referenceTable(w *strings.Builder, fs string) {
	r := b.res
	var rows []string
	if rc, ok := r.stat(fs + "|run|runc|wall"); ok {
		sd, _ := r.stat(fs + "|run|" + toolSD + "|wall")
		ct, _ := r.stat(fs + "|run|" + toolCTR + "|wall")
		rows = append(rows, fmt.Sprintf("| raw `runc run` of `true` (busybox bundle) | %s | %.1f× | %.1f× |", rc.dur(), sd.med/rc.med, ct.med/rc.med))
	}
	for _, scen := range []string{"debian", "multi-gzip", "multi-zstd"} {
		for _, m := range []string{"wall", "wall+sync"} {
			if m == "wall+sync" && fs != "disk" {
				continue
			}
			fl, ok := r.stat(fs + "|" + scen + "|floor|" + m)
			if !ok {
				continue
			}
			sd, _ := r.stat(fs + "|" + scen + "|" + toolSD + "|" + m)
			ct, _ := r.stat(fs + "|" + scen + "|" + toolCTR + "|" + m)
			label := "floor: " + strings.TrimPrefix(scenarioNames[scen], "Cold pull: ") + ", decompress + `tar -x`"
			if m == "wall+sync" {
				label += ", then `sync`"
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %.2f× | %.2f× |", label, fl.dur(), sd.med/fl.med, ct.med/fl.med))
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "Reference figures (%s): the physical floor and raw runc.\n\n| figure | median [min–max] | stevedore ÷ figure | containerd ÷ figure |\n|---|---|---|---|\n%s\n\n", fs, strings.Join(rows, "\n"))
}

func (b *bench) cpuTable(w *strings.Builder, fs string) {
	r := b.res
	var rows []string
	for _, scen := range []string{"busybox", "debian", "multi-gzip", "multi-zstd", "shared10", "run"} {
		sd, ok1 := r.stat(fs + "|" + scen + "|" + toolSD + "|cpu")
		ct, ok2 := r.stat(fs + "|" + scen + "|" + toolCTR + "|cpu")
		if !ok1 || !ok2 {
			continue
		}
		fl := "—"
		if f, ok := r.stat(fs + "|" + scen + "|floor|cpu"); ok {
			fl = fmt.Sprintf("%.2f s", f.med)
		}
		rows = append(rows, fmt.Sprintf("| %s | %.2f s | %.2f s | %.2f× | %s |", scen, sd.med, ct.med, sd.med/math.Max(ct.med, 0.001), fl))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "CPU time (%s), median, daemons + client (all processes, on %d CPUs):\n\n| scenario | stevedore | containerd | ratio | floor (decompress + tar) |\n|---|---|---|---|---|\n%s\n\n", fs, runtime.NumCPU(), strings.Join(rows, "\n"))
}

func (b *bench) timelineTable(w *strings.Builder, fs string) {
	r := b.res
	var rows []string
	for _, scen := range []string{"busybox", "debian", "multi-gzip", "multi-zstd", "shared10"} {
		k := fs + "|" + scen + "|" + toolSD + "|"
		wall, ok := r.stat(k + "wall")
		if !ok {
			continue
		}
		cell := func(m string) string {
			if st, ok := r.stat(k + m); ok {
				return fmt.Sprintf("%.2f", st.med)
			}
			return "—"
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %.2f | %s | %s | %s |", scen, cell("t-resolved"), cell("t-fetched"), cell("t-applied"), cell("t-unpacked"), wall.med,
			cell("sum-fetch"), cell("sum-apply"), cell("max-apply")))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "Stevedore's stages (%s), median seconds after `ctl pull` started, from the times in its events; Σ are the durations the fetchers and the unpacker recorded (they overlap):\n\n"+
		"| scenario | first resolved | last blob committed | last layer applied | image unpacked | ctl exited | Σ fetch | Σ apply | slowest apply |\n|---|---|---|---|---|---|---|---|---|\n%s\n\n", fs, strings.Join(rows, "\n"))
}

func (b *bench) runTimelineTable(w *strings.Builder, fs string) {
	k := fs + "|run|" + toolSD + "|"
	wall, ok := b.res.stat(k + "wall")
	if !ok {
		return
	}
	var head, cells []string
	for _, t := range []string{"container-create-requested", "container-created", "task-start-requested", "task-started", "task-exited", "container-delete-requested", "container-deleted"} {
		if st, ok := b.res.stat(k + "first:" + t); ok {
			head = append(head, t)
			cells = append(cells, fmt.Sprintf("%.1f", st.med*1000))
		}
	}
	if len(head) == 0 {
		return
	}
	head = append(head, "ctl exited")
	cells = append(cells, fmt.Sprintf("%.1f", wall.med*1000))
	if rc, ok := b.res.stat(fs + "|run|runc|wall"); ok {
		head = append(head, "(raw runc run)")
		cells = append(cells, fmt.Sprintf("%.1f", rc.med*1000))
	}
	fmt.Fprintf(w, "Stevedore's `run --rm` (%s), median ms after `ctl run` started, from the times in its events:\n\n| %s |\n|%s\n| %s |\n\n",
		fs, strings.Join(head, " | "), strings.Repeat("---|", len(head)), strings.Join(cells, " | "))
}
