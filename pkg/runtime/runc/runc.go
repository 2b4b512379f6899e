// Package runc runs Stevedore tasks with runc (through go-runc), one
// monitor process per task in the manner of containerd's shim, so that the
// executor can crash or be upgraded without killing running tasks or losing
// their exit codes. It implements runtime.Runtime.
//
// Start launches the task's monitor detached from the executor (its own
// session, stdio to a log file, no parent-death signal); the monitor makes
// itself the child subreaper, runs runc create and runc start with pipes for
// the task's stdio, copies stdout and stderr to StateDir/stdout.log and
// stderr.log and to core NATS, feeds stdin from NATS, reaps the task's init
// with wait4, and writes StateDir/exit.json atomically before it exits.
// Wait learns of the exit through the monitor's unix socket in the state
// dir, at once; once the monitor is gone it reads exit.json.
//
// The executor's own service must not kill its monitors when it stops: under
// systemd use KillMode=process (containerd does the same for its shims).
package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// Defaults for Config.
const (
	// DefaultRoot is the runc --root used when Config.Root is empty. It is
	// Stevedore's own, so List sees only Stevedore's containers.
	DefaultRoot = "/run/stevedore/runc"
	// DefaultStartTimeout bounds how long Start waits for the monitor.
	DefaultStartTimeout = 60 * time.Second
)

// Config configures a Runtime.
type Config struct {
	// Runc is the runc binary: a path, or a name looked up in PATH. Empty
	// means "runc".
	Runc string
	// Root is runc's --root, where it keeps container state. Empty means
	// DefaultRoot.
	Root string
	// StateRoot holds the tasks' state dirs (one per task, named by id, or
	// a symlink to the task's CreateOpts.StateDir). Required.
	StateRoot string
	// MonitorCmd starts a monitor: the program and leading arguments, to
	// which Start appends "--state-dir DIR". The program must call
	// MonitorMain with the arguments after MonitorCmd. Empty means this
	// executable with the argument "monitor".
	MonitorCmd []string
	// StartTimeout bounds how long Start waits for the monitor to report
	// the task started. Zero means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Runtime runs tasks with runc. It keeps no state in memory: a new Runtime
// on the same roots sees every task an earlier one started.
type Runtime struct {
	cfg  Config
	runc *gorunc.Runc

	mu      sync.Mutex
	spare   *monitorProc // a monitor started ahead of time, or nil
	natsURL string       // the last task's NATS URL: the spare connects to it ahead of time
	closed  bool
}

var _ runtime.Runtime = (*Runtime)(nil)

// idRe is what a task id may be: a runc id that is also one subject token
// (runtime.TaskID's forms).
var idRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$`)

// nsRe is a namespace, as pkg/events validates it.
var nsRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// New returns a Runtime for cfg. A runc binary that cannot be found is
// ErrUnavailable; a missing StateRoot is ErrInvalidArgument.
func New(cfg Config) (*Runtime, error) {
	if cfg.Runc == "" {
		cfg.Runc = "runc"
	}
	path, err := exec.LookPath(cfg.Runc)
	if err != nil {
		return nil, fmt.Errorf("runc not found: install runc (%v): %w", err, errdefs.ErrUnavailable)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("runc path: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	cfg.Runc = path
	if cfg.Root == "" {
		cfg.Root = DefaultRoot
	}
	if cfg.StateRoot == "" {
		return nil, fmt.Errorf("runc runtime: a state root is required: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range []*string{&cfg.Root, &cfg.StateRoot} {
		if *p, err = filepath.Abs(*p); err != nil {
			return nil, fmt.Errorf("runc runtime: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	if len(cfg.MonitorCmd) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runc runtime: find own executable for the monitor: %w: %w", err, errdefs.ErrInternal)
		}
		cfg.MonitorCmd = []string{self, "monitor"}
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if err := os.MkdirAll(cfg.StateRoot, 0o711); err != nil {
		return nil, fmt.Errorf("runc runtime: create state root: %w: %w", err, errdefs.ErrUnavailable)
	}
	return &Runtime{
		cfg:  cfg,
		runc: &gorunc.Runc{Command: cfg.Runc, Root: cfg.Root, LogFormat: gorunc.JSON},
	}, nil
}

// Start implements runtime.Runtime. See the package doc for what the monitor
// does. Start returns once the task runs, or with runc's error; on error the
// monitor has exited, no container is left and the state dir is removed.
func (r *Runtime) Start(ctx context.Context, opts runtime.CreateOpts) (int, error) {
	if err := r.validate(&opts); err != nil {
		return 0, err
	}
	if r.runcKnows(opts.ID) {
		return 0, fmt.Errorf("start the task of container %s: a container with this id exists: %w", taskName(opts), errdefs.ErrAlreadyExists)
	}
	dir, err := r.makeStateDir(opts)
	if err != nil {
		return 0, err
	}
	pid, err := r.startMonitor(ctx, opts, dir)
	if err != nil {
		r.removeStateDir(opts.ID, dir)
		return 0, err
	}
	return pid, nil
}

// runcKnows reports whether runc has state for container id, by looking for
// its state file in runc's root instead of running runc (which costs a
// process start on the hot path of every task start).
func (r *Runtime) runcKnows(id string) bool {
	_, err := os.Stat(filepath.Join(r.runc.Root, id, "state.json"))
	return err == nil
}

func (r *Runtime) validate(opts *runtime.CreateOpts) error {
	if !idRe.MatchString(opts.ID) {
		return fmt.Errorf("task id %q: must match %s: %w", opts.ID, idRe, errdefs.ErrInvalidArgument)
	}
	if !nsRe.MatchString(opts.Namespace) {
		return fmt.Errorf("task %s: namespace %q: must match %s: %w", opts.ID, opts.Namespace, nsRe, errdefs.ErrInvalidArgument)
	}
	if opts.Container != "" && !events.ValidContainerID(opts.Container) {
		return fmt.Errorf("task %s: container id %q: must match %s: %w", opts.ID, opts.Container, events.ContainerIDPattern, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(opts.Bundle) {
		return fmt.Errorf("task %s: bundle %q is not an absolute path: %w", opts.ID, opts.Bundle, errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(filepath.Join(opts.Bundle, "config.json")); err != nil {
		return fmt.Errorf("task %s: bundle: %w: %w", opts.ID, err, errdefs.ErrInvalidArgument)
	}
	if opts.Stdin && opts.NATSURL == "" {
		return fmt.Errorf("task %s: stdin needs a NATS URL to be fed from: %w", opts.ID, errdefs.ErrInvalidArgument)
	}
	if opts.StateDir != "" {
		d, err := filepath.Abs(opts.StateDir)
		if err != nil {
			return fmt.Errorf("task %s: state dir: %w: %w", opts.ID, err, errdefs.ErrInvalidArgument)
		}
		opts.StateDir = d
	}
	return nil
}

// link is the entry for id under the state root: the state dir itself, or
// a symlink to it.
func (r *Runtime) link(id string) string { return filepath.Join(r.cfg.StateRoot, id) }

// makeStateDir creates the task's state dir (and its symlink under the state
// root if it lives elsewhere) and writes task.json.
func (r *Runtime) makeStateDir(opts runtime.CreateOpts) (string, error) {
	link := r.link(opts.ID)
	dir := opts.StateDir
	if dir == "" {
		dir = link
	}
	if _, ok, _ := readTask(dir); ok {
		return "", fmt.Errorf("start the task of container %s: state dir %s holds a task already: %w", taskName(opts), dir, errdefs.ErrAlreadyExists)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("start the task of container %s: create state dir: %w: %w", taskName(opts), err, errdefs.ErrUnavailable)
	}
	if dir != link {
		if cur, err := r.stateDir(opts.ID); err == nil && cur != dir {
			return "", fmt.Errorf("start the task of container %s: a task with this id has state in %s: %w", taskName(opts), cur, errdefs.ErrAlreadyExists)
		}
		_ = os.Remove(link) // a dangling symlink of an earlier task
		if err := os.Symlink(dir, link); err != nil {
			return "", fmt.Errorf("start the task of container %s: link state dir: %w: %w", taskName(opts), err, errdefs.ErrUnavailable)
		}
	}
	info := taskInfo{ID: opts.ID, Namespace: opts.Namespace, Bundle: opts.Bundle, Stdin: opts.Stdin, Created: time.Now().UTC()}
	if err := writeJSONAtomic(dir, taskFile, info); err != nil {
		return "", fmt.Errorf("start the task of container %s: %w: %w", taskName(opts), err, errdefs.ErrUnavailable)
	}
	return dir, nil
}

func (r *Runtime) removeStateDir(id, dir string) {
	_ = os.RemoveAll(dir)
	if dir != r.link(id) {
		_ = os.Remove(r.link(id))
	}
}

func readTask(dir string) (taskInfo, bool, error) {
	var t taskInfo
	ok, err := readJSON(dir, taskFile, &t)
	return t, ok, err
}

// startMonitor launches the monitor detached and waits for its report.
// monitorProc is a started monitor process waiting for its config.
type monitorProc struct {
	cmd    *exec.Cmd
	cfgW   *os.File // the config goes here (a pipe: it may carry credentials)
	readyR *os.File // the monitor reports the task's start here
	exited chan struct{}
}

func (p *monitorProc) release() {
	_ = p.cfgW.Close()
	_ = p.readyR.Close()
}

// spawnMonitor starts a monitor process. With dir empty it is started ahead
// of time: it waits for a config naming its state dir and opens its log
// there; until then its output goes nowhere, and it exits quietly if the
// config pipe closes unused.
func (r *Runtime) spawnMonitor(dir string) (*monitorProc, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	defer cfgR.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		_ = cfgW.Close()
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	defer readyW.Close()
	args := append([]string{}, r.cfg.MonitorCmd[1:]...)
	var out *os.File
	if dir != "" {
		args = append(args, "--state-dir", dir)
		if out, err = os.OpenFile(filepath.Join(dir, MonitorLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
			_ = cfgW.Close()
			_ = readyR.Close()
			return nil, fmt.Errorf("monitor log: %w: %w", err, errdefs.ErrUnavailable)
		}
		defer out.Close()
	}
	cmd := exec.Command(r.cfg.MonitorCmd[0], args...)
	cmd.Dir = "/"
	if dir != "" {
		cmd.Dir = dir
	}
	cmd.Stdin = cfgR
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own session: no signals from the executor's terminal or process
	// group, and no parent-death signal, so the executor's death leaves it
	// running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = cfgW.Close()
		_ = readyR.Close()
		return nil, fmt.Errorf("start monitor %s: %w: %w", r.cfg.MonitorCmd[0], err, errdefs.ErrUnavailable)
	}
	p := &monitorProc{cmd: cmd, cfgW: cfgW, readyR: readyR, exited: make(chan struct{})}
	// Reap the monitor when it exits while we run. If we die first it is
	// reparented, and keeps running.
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// spareDelay is how long after a task start the next spare monitor is
// started. Its process start costs several ms of CPU; right after a start,
// that would compete with runc and with the first moments of the task (a
// short task's exit and removal), which is what a start's caller waits for.
const spareDelay = 100 * time.Millisecond

// takeSpare returns the monitor started ahead of time, if one is waiting:
// a task start then skips the monitor's process start (~10 ms). The caller
// starts the next one with refill, spareDelay after its task started.
func (r *Runtime) takeSpare() *monitorProc {
	r.mu.Lock()
	p := r.spare
	r.spare = nil
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		p.release()
		return nil
	default:
		return p
	}
}

func (r *Runtime) refill() {
	r.mu.Lock()
	skip := r.closed || r.spare != nil
	url := r.natsURL
	r.mu.Unlock()
	if skip {
		return
	}
	p, err := r.spawnMonitor("")
	if err != nil {
		return
	}
	if url != "" {
		// It connects while it waits, with the URL the last task used.
		data, _ := json.Marshal(monitorConfig{Preconnect: true, NATSURL: url})
		if _, err := p.cfgW.Write(data); err != nil {
			p.release()
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spare != nil || r.closed {
		p.release() // not needed: it exits on the closed config pipe
		return
	}
	r.spare = p
}

// Close releases the monitor started ahead of time. Tasks are not touched.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.spare != nil {
		r.spare.release()
		r.spare = nil
	}
	return nil
}

func (r *Runtime) startMonitor(ctx context.Context, opts runtime.CreateOpts, dir string) (int, error) {
	cfg := monitorConfig{
		ID: opts.ID, Namespace: opts.Namespace, Container: opts.Container, Bundle: opts.Bundle, Stdin: opts.Stdin,
		NATSURL: opts.NATSURL, Runc: r.cfg.Runc, Root: r.cfg.Root,
	}
	cfgData, err := json.Marshal(cfg)
	if err != nil {
		return 0, fmt.Errorf("start the task of container %s: %w: %w", taskName(opts), err, errdefs.ErrInternal)
	}
	p := r.takeSpare()
	r.mu.Lock()
	r.natsURL = opts.NATSURL
	r.mu.Unlock()
	defer time.AfterFunc(spareDelay, r.refill)
	if p != nil {
		// The spare learns its state dir from the config.
		c := cfg
		c.StateDir = dir
		data, _ := json.Marshal(c)
		if _, werr := p.cfgW.Write(data); werr != nil {
			// It died while waiting: start one the usual way.
			p.release()
			p = nil
		}
	}
	var werr error
	if p == nil {
		if p, err = r.spawnMonitor(dir); err != nil {
			return 0, fmt.Errorf("start the task of container %s: %w", taskName(opts), err)
		}
		_, werr = p.cfgW.Write(cfgData)
	}
	_ = p.cfgW.Close()
	defer p.readyR.Close()
	cmd, exited, readyR := p.cmd, p.exited, p.readyR

	msg, err := readReady(ctx, readyR, r.cfg.StartTimeout)
	if werr != nil && err == nil && msg.Pid == 0 {
		err = fmt.Errorf("send monitor its config: %w", werr)
	}
	if err == nil && msg.Error == "" && msg.Pid > 0 {
		return msg.Pid, nil
	}
	// Failed: make sure nothing is left.
	if err == nil {
		// The monitor cleaned up and exits by itself.
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		return 0, fmt.Errorf("start the task of container %s: %s: %w", taskName(opts), msg.Error, errdefs.FromCode(msg.Code))
	}
	_ = cmd.Process.Kill()
	<-exited
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = r.runc.Delete(dctx, opts.ID, &gorunc.DeleteOpts{Force: true})
	detail := tail(filepath.Join(dir, MonitorLog), 2048)
	if detail != "" {
		detail = "; monitor log: " + detail
	}
	return 0, fmt.Errorf("start the task of container %s: %w%s", taskName(opts), err, detail)
}

// readReady reads the monitor's report, bounded by ctx and timeout.
func readReady(ctx context.Context, rd *os.File, timeout time.Duration) (readyMsg, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = rd.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = rd.SetReadDeadline(time.Now()) })
	defer stop()
	var msg readyMsg
	err := json.NewDecoder(rd).Decode(&msg)
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return msg, fmt.Errorf("waiting for the monitor: %w", ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return msg, fmt.Errorf("monitor did not report within %v: %w", timeout, errdefs.ErrUnavailable)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return msg, fmt.Errorf("monitor exited without reporting: %w", errdefs.ErrUnavailable)
	default:
		return msg, fmt.Errorf("read monitor report: %w: %w", err, errdefs.ErrUnavailable)
	}
}

// tail returns the last n bytes of a file, trimmed.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	return strings.TrimSpace(string(data))
}

// stateDir finds the state dir of task id: ErrNotFound if there is none.
func (r *Runtime) stateDir(id string) (string, error) {
	if !idRe.MatchString(id) {
		return "", fmt.Errorf("task id %q: must match %s: %w", id, idRe, errdefs.ErrInvalidArgument)
	}
	link := r.link(id)
	fi, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("task %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("task %s: %w: %w", id, err, errdefs.ErrUnavailable)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return link, nil
	}
	dir, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("task %s: %w: %w", id, err, errdefs.ErrUnavailable)
	}
	if _, err := os.Stat(dir); err != nil {
		// The caller removed the state dir: the link is stale.
		return "", fmt.Errorf("task %s: state dir %s: %w", id, dir, errdefs.ErrNotFound)
	}
	return dir, nil
}

// Kill implements runtime.Runtime.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("task id %q: must match %s: %w", id, idRe, errdefs.ErrInvalidArgument)
	}
	err := r.runc.Kill(ctx, id, int(sig), nil)
	if err == nil {
		return nil
	}
	err = runcError("kill", id, err)
	if errors.Is(err, errdefs.ErrNotFound) {
		if _, derr := r.stateDir(id); derr == nil {
			return fmt.Errorf("kill task %s: the task is not running: %w", id, errdefs.ErrFailedPrecondition)
		}
	}
	return err
}

// Wait implements runtime.Runtime. It connects to the monitor's socket and
// blocks until the monitor writes the exit, so it returns within
// milliseconds of the task's exit (after its output reached the logs). When
// the monitor is gone it reads exit.json; when there is none (the monitor
// was killed), it polls every 100ms until the task is gone and then records
// and returns an Exit with Code -1 and Signal "unknown".
func (r *Runtime) Wait(ctx context.Context, id string) (runtime.Exit, error) {
	dir, err := r.stateDir(id)
	if err != nil {
		return runtime.Exit{}, err
	}
	for {
		if e, ok, err := readExit(dir); err != nil || ok {
			return e, err
		}
		if conn, err := dialMonitor(dir); err == nil {
			e, err := waitConn(ctx, conn)
			if err == nil {
				return e, nil
			}
			if ctx.Err() != nil {
				return runtime.Exit{}, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
			}
			// The monitor closed without an exit: it is ending or died;
			// look again.
		}
		// The monitor records the exit before it stops listening: a refused
		// connection usually means the exit is there now. (Without this
		// look, a task that exits before Wait is called waits a poll.)
		if e, ok, err := readExit(dir); err != nil || ok {
			return e, err
		}
		e, gone, err := r.exitIfGone(ctx, id, dir)
		if err != nil || gone {
			return e, err
		}
		select {
		case <-ctx.Done():
			return runtime.Exit{}, fmt.Errorf("wait for task %s: %w", id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitConn reads the exit the monitor writes on conn.
func waitConn(ctx context.Context, conn io.ReadWriteCloser) (runtime.Exit, error) {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	defer conn.Close()
	var e runtime.Exit
	if err := json.NewDecoder(conn).Decode(&e); err != nil {
		return e, fmt.Errorf("read exit from monitor: %w", err)
	}
	return e, nil
}

// exitIfGone decides, for a task with no recorded exit and no monitor to
// ask, whether it has ended. If it has, it records and returns an unknown
// exit. While the monitor lives or the task runs, gone is false.
func (r *Runtime) exitIfGone(ctx context.Context, id, dir string) (runtime.Exit, bool, error) {
	if monitorAlive(readMonitorPid(dir), dir) {
		return runtime.Exit{}, false, nil
	}
	// The monitor may have recorded the exit just before exiting.
	if e, ok, err := readExit(dir); err != nil || ok {
		return e, ok, err
	}
	c, err := r.runc.State(ctx, id)
	if err != nil {
		if err = runcError("state", id, err); !errors.Is(err, errdefs.ErrNotFound) {
			return runtime.Exit{}, false, err
		}
		c = nil
	}
	if c != nil && c.Status != "stopped" {
		if c.Status == "created" {
			return runtime.Exit{}, false, fmt.Errorf("task %s was never started and its monitor is gone; delete it: %w", id, errdefs.ErrFailedPrecondition)
		}
		return runtime.Exit{}, false, nil // running without its monitor: keep polling
	}
	st, ok, err := readState(dir)
	if err != nil {
		return runtime.Exit{}, false, err
	}
	if !ok {
		return runtime.Exit{}, false, fmt.Errorf("task %s was never started and its monitor is gone: %w", id, errdefs.ErrFailedPrecondition)
	}
	e := runtime.Exit{Code: -1, Signal: "unknown", StartedAt: st.StartedAt, ExitedAt: time.Now().UTC()}
	e, err = recordExitOnce(dir, e)
	return e, err == nil, err
}

// recordExitOnce writes exit.json unless it exists (the first writer wins)
// and returns the recorded exit.
func recordExitOnce(dir string, e runtime.Exit) (runtime.Exit, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("encode exit: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".exit.json.tmp*")
	if err != nil {
		return e, fmt.Errorf("record exit: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return e, fmt.Errorf("record exit: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return e, fmt.Errorf("record exit: %w", err)
	}
	_ = tmp.Close()
	if err := os.Link(tmp.Name(), filepath.Join(dir, exitFile)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			got, _, rerr := readExit(dir)
			return got, rerr
		}
		return e, fmt.Errorf("record exit: %w", err)
	}
	return e, nil
}

// waitGone waits until process pid has exited, at most timeout or until
// ctx ends.
func waitGone(ctx context.Context, pid int, timeout time.Duration) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // gone already (ESRCH), or no pidfds: do not wait
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return
		}
		// Poll in short slices so that a cancelled ctx is noticed.
		ms := int(min(left, 100*time.Millisecond) / time.Millisecond)
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, max(ms, 1))
		if n > 0 || (err != nil && err != unix.EINTR) {
			return
		}
	}
}

func readMonitorPid(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, monitorPidFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// Exit implements runtime.Runtime.
func (r *Runtime) Exit(ctx context.Context, id string) (runtime.Exit, bool, error) {
	dir, err := r.stateDir(id)
	if err != nil {
		return runtime.Exit{}, false, err
	}
	if e, ok, err := readExit(dir); err != nil || ok {
		return e, ok, err
	}
	e, gone, err := r.exitIfGone(ctx, id, dir)
	if err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
		return runtime.Exit{}, false, err
	}
	return e, gone, nil
}

// State implements runtime.Runtime. The status comes from runc while runc
// knows the container (paused counts as running), else from the state dir:
// stopped with a recorded exit, unknown without.
func (r *Runtime) State(ctx context.Context, id string) (runtime.State, error) {
	dir, derr := r.stateDir(id)
	if derr != nil && !errors.Is(derr, errdefs.ErrNotFound) {
		return runtime.State{}, derr
	}
	if derr != nil && !r.runcKnows(id) {
		// Neither we nor runc know it: no need to ask runc.
		return runtime.State{}, derr
	}
	c, err := r.runc.State(ctx, id)
	if err != nil {
		if err = runcError("state", id, err); !errors.Is(err, errdefs.ErrNotFound) {
			return runtime.State{}, err
		}
		if derr != nil {
			return runtime.State{}, derr
		}
		c = nil
	}
	if derr != nil {
		dir = "" // a container without a state dir
	}
	return stateOf(id, dir, c), nil
}

// stateOf combines what runc says of a container (nil: runc does not know
// it) with the task's state dir (empty: none).
func stateOf(id, dir string, c *gorunc.Container) runtime.State {
	st := runtime.State{ID: id}
	if c != nil {
		st.Status, st.Pid = runcStatus(c.Status), c.Pid
	}
	if dir == "" {
		return st
	}
	if mp := readMonitorPid(dir); monitorAlive(mp, dir) {
		st.MonitorPid = mp
	}
	if ms, ok, _ := readState(dir); ok && st.Pid == 0 {
		st.Pid = ms.Pid
	}
	if c == nil {
		st.Status = runtime.StatusUnknown
		if _, ok, _ := readExit(dir); ok {
			st.Status = runtime.StatusStopped
		}
	}
	return st
}

func runcStatus(s string) string {
	switch s {
	case "created":
		return runtime.StatusCreated
	case "running", "paused", "pausing":
		return runtime.StatusRunning
	case "stopped":
		return runtime.StatusStopped
	default:
		return runtime.StatusUnknown
	}
}

// List implements runtime.Runtime: every task with a state dir, then every
// container in the runc root without one (MonitorPid 0: nobody records
// its exit; reconciliation should delete it), sorted by id. Symlinks to
// state dirs the caller removed are pruned.
func (r *Runtime) List(ctx context.Context) ([]runtime.State, error) {
	cs, err := r.runc.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", runcError("list", "", err))
	}
	containers := make(map[string]*gorunc.Container, len(cs))
	for _, c := range cs {
		containers[c.ID] = c
	}
	entries, err := os.ReadDir(r.cfg.StateRoot)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w: %w", err, errdefs.ErrUnavailable)
	}
	var out []runtime.State
	for _, ent := range entries {
		id := ent.Name()
		if !idRe.MatchString(id) {
			continue
		}
		dir, err := r.stateDir(id)
		if errors.Is(err, errdefs.ErrNotFound) {
			_ = os.Remove(r.link(id)) // only a stale symlink gets here
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, stateOf(id, dir, containers[id]))
		delete(containers, id)
	}
	for id, c := range containers {
		out = append(out, stateOf(id, "", c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// deleteWait bounds how long a forced Delete waits for the monitor to record
// the exit of the task it killed.
const deleteWait = 10 * time.Second

// Delete implements runtime.Runtime: runc delete (with --force if force),
// which also removes the task's cgroups. The state dir is kept.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	dir, derr := r.stateDir(id)
	if derr != nil && !errors.Is(derr, errdefs.ErrNotFound) {
		return derr
	}
	if derr == nil {
		// A monitor whose task exited removes runc's record itself and
		// then exits: wait for that rather than run runc again.
		if pid := readMonitorPid(dir); monitorAlive(pid, dir) {
			if _, exited, _ := readExit(dir); exited {
				waitGone(ctx, pid, deleteWait)
			}
		}
		if !r.runcKnows(id) {
			return nil
		}
	}
	if derr != nil {
		if !r.runcKnows(id) {
			return fmt.Errorf("delete task %s: %w", id, errdefs.ErrNotFound)
		}
		// runc delete --force succeeds for a container that does not exist.
		if _, err := r.runc.State(ctx, id); err != nil {
			if err = runcError("state", id, err); errors.Is(err, errdefs.ErrNotFound) {
				return fmt.Errorf("delete task %s: %w", id, errdefs.ErrNotFound)
			}
			return err
		}
	}
	if err := r.runc.Delete(ctx, id, &gorunc.DeleteOpts{Force: force}); err != nil {
		err = runcError("delete", id, err)
		if errors.Is(err, errdefs.ErrNotFound) && derr == nil {
			return nil // already deleted
		}
		return err
	}
	if force && derr == nil && monitorAlive(readMonitorPid(dir), dir) {
		wctx, cancel := context.WithTimeout(ctx, deleteWait)
		defer cancel()
		_, _ = r.Wait(wctx, id)
	}
	return nil
}

// taskName is how messages name a task: by its container's id, which the
// user knows, rather than the node-wide task id.
func taskName(o runtime.CreateOpts) string {
	if o.Container != "" {
		return o.Container
	}
	return o.ID
}
