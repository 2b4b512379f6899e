// Command bench measures Stevedore against containerd's ctr on this machine,
// in the same run, and prints a Markdown table of ratios (issue 6). It is
// started by scripts/bench-containerd.sh (make bench), which installs what
// is missing and builds the binaries first.
//
// It starts Debian's docker-registry on a loopback port with its own
// storage, builds and pushes its images (cached under bench/.cache), then
// for each filesystem (the root disk, then a tmpfs) measures cold pulls,
// concurrent pulls, a pull of a present image and run --rm latency, each the
// median of BENCH_RUNS runs alternating the two tools, plus the physical
// floor (decompress and write the same layers with pigz/zstd and tar).
//
// Every cold run gets a fresh state root and fresh daemons, started outside
// the timed region; old roots are deleted only at the end (or, left over
// from an earlier run, at the start followed by a pause), because on ext4
// without a journal file creation is much slower for about a minute after
// many files are deleted. See bench/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	repo      string          // repository root
	bin       string          // Stevedore binaries
	dir       string          // BENCH_DIR: state roots, registry storage, tmpfs mount point
	cache     string          // bench/.cache: built layers, debootstrap rootfs
	out       string          // bench/out: logs and profiles of this run
	results   string          // bench/results.md
	runs      int             // BENCH_RUNS
	fss       []string        // BENCH_FS: disk, tmpfs
	only      map[string]bool // BENCH_ONLY: scenario keys to run (empty: all)
	pprof     bool            // BENCH_PPROF
	settle    time.Duration   // BENCH_SETTLE: pause after deleting old roots
	tmpfsSize string          // BENCH_TMPFS_SIZE
	mirror    string          // BENCH_DEBIAN_MIRROR
	fetchers  int
	keep      bool          // BENCH_KEEP: leave the state roots for inspection
	quietWait time.Duration // BENCH_QUIET_WAIT: longest wait for other processes to go quiet before a timed run
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadConfig() (config, error) {
	exe, _ := os.Executable()
	repo := env("BENCH_REPO", "")
	if repo == "" {
		wd, _ := os.Getwd()
		repo = wd
	}
	c := config{
		repo:      repo,
		bin:       env("BENCH_BIN", filepath.Join(repo, "bench", ".cache", "bin")),
		dir:       env("BENCH_DIR", "/var/tmp/stevedore-bench"),
		cache:     filepath.Join(repo, "bench", ".cache"),
		out:       filepath.Join(repo, "bench", "out"),
		results:   filepath.Join(repo, "bench", "results.md"),
		tmpfsSize: env("BENCH_TMPFS_SIZE", "14g"),
		mirror:    env("BENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
		fetchers:  2,
		pprof:     env("BENCH_PPROF", "0") == "1",
		keep:      env("BENCH_KEEP", "0") == "1",
		only:      map[string]bool{},
	}
	_ = exe
	var err error
	q, err := strconv.Atoi(env("BENCH_QUIET_WAIT", "20"))
	if err != nil || q < 0 {
		return c, fmt.Errorf("BENCH_QUIET_WAIT=%q: want seconds", os.Getenv("BENCH_QUIET_WAIT"))
	}
	c.quietWait = time.Duration(q) * time.Second
	if c.runs, err = strconv.Atoi(env("BENCH_RUNS", "5")); err != nil || c.runs < 1 {
		return c, fmt.Errorf("BENCH_RUNS=%q: want a positive number", os.Getenv("BENCH_RUNS"))
	}
	s, err := strconv.Atoi(env("BENCH_SETTLE", "65"))
	if err != nil || s < 0 {
		return c, fmt.Errorf("BENCH_SETTLE=%q: want seconds", os.Getenv("BENCH_SETTLE"))
	}
	c.settle = time.Duration(s) * time.Second
	for _, f := range strings.Split(env("BENCH_FS", "disk,tmpfs"), ",") {
		f = strings.TrimSpace(f)
		if f != "disk" && f != "tmpfs" {
			return c, fmt.Errorf("BENCH_FS: %q is neither disk nor tmpfs", f)
		}
		c.fss = append(c.fss, f)
	}
	for _, k := range strings.Split(os.Getenv("BENCH_ONLY"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.only[k] = true
		}
	}
	return c, nil
}

// bench is one run of the suite.
type bench struct {
	cfg     config
	start   time.Time
	reg     *registry
	imgs    *imageSet
	res     *results
	notes   []string
	mu      sync.Mutex
	procs   map[*proc]bool
	mounts  []string
	cleanup []func()
	// floorTool is the gzip decompressor the floor used (pigz or gzip).
	floorTool string
	profiles  []profileSummary
	// goProfiles starts Stevedore's daemons with --metrics and --pprof (the
	// profile step).
	goProfiles bool
	// busyStarts counts timed runs started while the machine was still busy
	// after BENCH_QUIET_WAIT.
	busyStarts int
}

func main() {
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root (containerd, runc, overlayfs, tmpfs)")
		os.Exit(2)
	}
	b := &bench{cfg: cfg, start: time.Now(), res: newResults(), procs: map[*proc]bool{}}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = b.run(ctx)
	b.teardown()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) want(key string) bool { return len(b.cfg.only) == 0 || b.cfg.only[key] }

func (b *bench) run(ctx context.Context) error {
	if err := checkTools(b.cfg.pprof); err != nil {
		return err
	}
	for _, d := range []string{b.cfg.dir, b.cfg.cache, b.cfg.out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := b.clearLeftovers(); err != nil {
		return err
	}
	reg, err := b.startRegistry(ctx)
	if err != nil {
		return err
	}
	b.reg = reg
	if !b.scalingOnly() {
		if b.imgs, err = b.buildImages(ctx); err != nil {
			return err
		}
		if err := b.reg.warm(); err != nil {
			return err
		}
		for _, fs := range b.cfg.fss {
			if err := b.measureFS(ctx, fs); err != nil {
				return fmt.Errorf("%s: %w", fs, err)
			}
		}
	}
	if b.want("scaling") {
		if err := b.scaling(ctx); err != nil {
			return fmt.Errorf("scaling: %w", err)
		}
	}
	if b.cfg.pprof {
		if err := b.profile(ctx); err != nil {
			b.notes = append(b.notes, "Profiling failed: "+err.Error())
			b.logf("profile: %v", err)
		}
	}
	md := b.report()
	if err := os.WriteFile(b.cfg.results, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Println(md)
	b.logf("wrote %s", b.cfg.results)
	return nil
}

// measureFS runs every scenario with state roots on fs ("disk" or "tmpfs").
func (b *bench) measureFS(ctx context.Context, fs string) error {
	base := filepath.Join(b.cfg.dir, fs)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return err
	}
	if fs == "tmpfs" {
		if err := run("mount", "-t", "tmpfs", "-o", "size="+b.cfg.tmpfsSize+",mode=755", "bench-tmpfs", base); err != nil {
			return fmt.Errorf("mount tmpfs: %w", err)
		}
		b.mounts = append(b.mounts, base)
	}
	b.logf("== %s: state roots under %s", fs, base)
	s := &suite{b: b, fs: fs, base: base}
	steps := []struct {
		key  string
		keys []string // run when any is wanted
		fn   func(context.Context) error
	}{
		{"busybox", nil, func(ctx context.Context) error { return s.coldPull(ctx, "busybox", []string{b.imgs.busybox.ref}) }},
		{"debian", nil, func(ctx context.Context) error { return s.coldPull(ctx, "debian", []string{b.imgs.debian.ref}) }},
		{"multi-gzip", nil, func(ctx context.Context) error { return s.coldPull(ctx, "multi-gzip", []string{b.imgs.multiGzip.ref}) }},
		{"multi-zstd", nil, func(ctx context.Context) error { return s.coldPull(ctx, "multi-zstd", []string{b.imgs.multiZstd.ref}) }},
		{"shared10", nil, func(ctx context.Context) error { return s.coldPull(ctx, "shared10", b.imgs.sharedRefs()) }},
		{"present", []string{"present", "run"}, s.presentAndRun},
		{"floor", []string{"floor", "debian", "multi-gzip", "multi-zstd"}, s.floor},
	}
	for _, st := range steps {
		keys := st.keys
		if keys == nil {
			keys = []string{st.key}
		}
		wanted := false
		for _, k := range keys {
			wanted = wanted || b.want(k)
		}
		if !wanted {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.key, err)
		}
	}
	return nil
}

// clearLeftovers removes state roots an earlier run left behind and pauses
// so that their deletion does not slow the measurements.
func (b *bench) clearLeftovers() error {
	unmountUnder(b.cfg.dir)
	removed := false
	for _, fs := range []string{"disk", "tmpfs"} {
		base := filepath.Join(b.cfg.dir, fs)
		if isMountpoint(base) {
			_ = syscall.Unmount(base, syscall.MNT_DETACH)
		}
		if _, err := os.Stat(base); err == nil {
			b.logf("removing state roots left by an earlier run: %s", base)
			if err := os.RemoveAll(base); err != nil {
				return err
			}
			removed = fs == "disk" || removed
		}
	}
	if removed && b.cfg.settle > 0 {
		// ext4 without a journal skips an inode deleted less than 60 s ago
		// (360 s while its inode table block is dirty) when allocating one
		// (recently_deleted()), which makes file creation slow: flush, then wait.
		syncAll()
		b.logf("pausing %v so the deletion does not slow file creation on this disk (BENCH_SETTLE)", b.cfg.settle)
		time.Sleep(b.cfg.settle)
	}
	return nil
}

// teardown stops every process the suite started, unmounts what it
// mounted and deletes the state roots (after the measurements).
func (b *bench) teardown() {
	b.mu.Lock()
	var ps []*proc
	for p := range b.procs {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	for _, p := range ps {
		p.stop(10 * time.Second)
	}
	for i := len(b.cleanup) - 1; i >= 0; i-- {
		b.cleanup[i]()
	}
	unmountUnder(b.cfg.dir)
	for i := len(b.mounts) - 1; i >= 0; i-- {
		_ = syscall.Unmount(b.mounts[i], syscall.MNT_DETACH)
	}
	if b.cfg.keep {
		b.logf("BENCH_KEEP=1: state roots left under %s", b.cfg.dir)
		return
	}
	b.logf("removing the state roots under %s (this disk deletes slowly; a few minutes)", b.cfg.dir)
	for _, fs := range []string{"disk", "tmpfs"} {
		_ = os.RemoveAll(filepath.Join(b.cfg.dir, fs))
	}
	b.logf("done")
}

// checkTools fails with what is missing (scripts/bench-containerd.sh
// installs it).
func checkTools(pprof bool) error {
	var missing []string
	tools := []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "docker-registry", "debootstrap", "zstd", "tar", "sync", "mount"}
	if pprof {
		tools = append(tools, "perf")
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing = append(missing, "/bin/busybox (busybox-static)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s (scripts/bench-containerd.sh installs them)", strings.Join(missing, ", "))
	}
	if runtime.NumCPU() < 1 {
		return errors.New("no CPUs")
	}
	return nil
}

// run runs a command to its end, returning its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// output runs a command and returns its standard output.
func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// syncAll flushes every filesystem (outside timed regions, so one run's
// dirty pages are not written back during the next).
func syncAll() time.Duration {
	t := time.Now()
	syscall.Sync()
	return time.Since(t)
}

// mountsUnder returns the mount points below dir, deepest last.
func mountsUnder(dir string) []string {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

func isMountpoint(dir string) bool {
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// unmountUnder detaches every mount below dir except the tmpfs mounts the
// suite made itself.
func unmountUnder(dir string) {
	ms := mountsUnder(dir)
	for i := len(ms) - 1; i >= 0; i-- {
		if strings.HasSuffix(ms[i], "/tmpfs") && filepath.Dir(ms[i]) == dir {
			continue
		}
		_ = syscall.Unmount(ms[i], syscall.MNT_DETACH)
	}
}

// cpuBusy returns the machine's busy and total CPU time so far (/proc/stat).
func cpuBusy() (busy, total time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line := strings.SplitN(string(b), "\n", 2)[0]
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var ticks [8]int64
	for i := range ticks {
		ticks[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	var bt, tt int64
	for i, v := range ticks {
		tt += v
		if i != 3 && i != 4 {
			bt += v
		}
	}
	return time.Duration(bt) * 10 * time.Millisecond, time.Duration(tt) * 10 * time.Millisecond
}

// waitQuiet waits (at most BENCH_QUIET_WAIT) until the machine is mostly
// idle, so other people's builds and tests on this shared machine do not
// land in a timed region; it returns how busy the last half second was.
func (b *bench) waitQuiet() float64 {
	deadline := time.Now().Add(b.cfg.quietWait)
	for {
		b0, t0 := cpuBusy()
		time.Sleep(500 * time.Millisecond)
		b1, t1 := cpuBusy()
		frac := 0.0
		if t1 > t0 {
			frac = float64(b1-b0) / float64(t1-t0)
		}
		if frac < 0.15 || time.Now().After(deadline) {
			if frac >= 0.15 {
				b.busyStarts++
			}
			return frac
		}
	}
}
