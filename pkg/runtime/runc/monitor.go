package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gorunc "github.com/containerd/go-runc"
	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// monitorConfig is what Start sends the monitor on its stdin. It may hold
// secrets (credentials in the NATS URL), so it is never written to disk.
type monitorConfig struct {
	// StateDir is the task's state dir; it is given here when the monitor
	// was started ahead of time, without --state-dir.
	StateDir  string `json:"stateDir,omitempty"`
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	// Container names the stdio subjects; empty means ID.
	Container string `json:"container,omitempty"`
	Bundle    string `json:"bundle"`
	Stdin     bool   `json:"stdin"`
	NATSURL   string `json:"natsURL,omitempty"`
	Runc      string `json:"runc"`
	Root      string `json:"root"`
	// Preconnect marks the message a spare monitor may get first: connect
	// to NATSURL now, while waiting, and read the task's config next.
	Preconnect bool `json:"preconnect,omitempty"`
}

// container is the id the task's stdio subjects are named by.
func (c *monitorConfig) container() string {
	if c.Container != "" {
		return c.Container
	}
	return c.ID
}

// readyMsg is what the monitor reports to Start on fd 3: the task's pid, or
// why it could not start.
type readyMsg struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

const (
	// monitorPidFile holds the monitor's pid, written first thing.
	monitorPidFile = "monitor.pid"
	// drainTimeout bounds how long the monitor reads the task's stdio after
	// its init exited (a process outside the task's pid namespace could hold
	// the pipes open for ever).
	drainTimeout = 2 * time.Second
	// natsFlushTimeout bounds the final flush of published output.
	natsFlushTimeout = 2 * time.Second
	// runcTimeout bounds runc create and start.
	runcTimeout = 2 * time.Minute
)

// MonitorMain is the entry point of a task's monitor process. The binary
// named by Config.MonitorCmd must call it with the arguments that follow
// MonitorCmd, and exit with what it returns; for the executor:
//
//	if len(os.Args) > 1 && os.Args[1] == "monitor" {
//		os.Exit(runc.MonitorMain(os.Args[2:]))
//	}
//
// before parsing its own flags or starting anything else. The monitor
// reads its configuration from stdin and reports to Start on fd 3; it is
// not meant to be run by hand.
func MonitorMain(args []string) int {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "the task's state dir")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	logger := log.New(os.Stderr, "monitor["+strconv.Itoa(os.Getpid())+"] ", log.LstdFlags|log.Lmicroseconds|log.LUTC)
	// fd 3 is the ready pipe to Start: keep it out of runc and the task.
	unix.CloseOnExec(3)
	ready := os.NewFile(3, "ready")
	var cfg monitorConfig
	dec := json.NewDecoder(os.Stdin)
	err := dec.Decode(&cfg)
	var pre *preconn
	if err == nil && *stateDir == "" && cfg.Preconnect {
		// A spare: its NATS connection is made while it waits, not while
		// the task starts.
		pre = preconnect(cfg.NATSURL, logger)
		cfg = monitorConfig{}
		err = dec.Decode(&cfg)
	}
	if err != nil {
		if *stateDir == "" && errors.Is(err, io.EOF) {
			return 0 // a monitor started ahead of time, never used
		}
		logger.Printf("read config: %v", err)
		report(ready, readyMsg{Error: "monitor: read config: " + err.Error(), Code: errdefs.Code(errdefs.ErrInternal)})
		return 2
	}
	if *stateDir == "" {
		// Started ahead of time: the state dir, and our log in it, come
		// with the config.
		*stateDir = cfg.StateDir
		if *stateDir == "" {
			report(ready, readyMsg{Error: "monitor: no state dir", Code: errdefs.Code(errdefs.ErrInternal)})
			return 2
		}
		f, err := os.OpenFile(filepath.Join(*stateDir, MonitorLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			report(ready, readyMsg{Error: "monitor: log: " + err.Error(), Code: errdefs.Code(errdefs.ErrInternal)})
			return 2
		}
		_ = unix.Dup2(int(f.Fd()), 1)
		_ = unix.Dup2(int(f.Fd()), 2)
		_ = f.Close()
	}
	m := &monitor{cfg: cfg, dir: *stateDir, log: logger, done: make(chan struct{}), pre: pre}
	if err := m.run(ready); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// report sends msg to Start and closes the ready pipe. Start may be gone (the
// executor crashed): the error is ignored.
func report(ready *os.File, msg readyMsg) {
	if ready == nil {
		return
	}
	data, _ := json.Marshal(msg)
	_, _ = ready.Write(append(data, '\n'))
	_ = ready.Close()
}

type monitor struct {
	cfg  monitorConfig
	dir  string
	log  *log.Logger
	runc *gorunc.Runc

	pre      *preconn      // a connection made ahead of time, or nil
	nc       *nats.Conn    // set by connectNATS; read after natsDone is closed
	natsDone chan struct{} // closed once connectNATS returned
	stdinSub *nats.Subscription
	stdinW   *os.File // our end of the task's stdin; nil without Stdin
	stdinEOF atomic.Bool

	exitJSON []byte        // set before done is closed
	done     chan struct{} // closed once the exit is recorded
	waiters  sync.WaitGroup
}

// run starts the task, records its output and exit, and returns after the
// exit is recorded and waiters are told.
func (m *monitor) run(ready *os.File) error {
	if err := os.WriteFile(filepath.Join(m.dir, monitorPidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		report(ready, readyMsg{Error: "monitor: " + err.Error(), Code: errdefs.Code(errdefs.ErrInternal)})
		return fmt.Errorf("write monitor pid: %w", err)
	}
	// Reap the task's init: runc create exits and leaves it to us.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		report(ready, readyMsg{Error: "monitor: set child subreaper: " + err.Error(), Code: errdefs.Code(errdefs.ErrInternal)})
		return fmt.Errorf("set child subreaper: %w", err)
	}
	// Outlive a terminal hangup or a stray ^C or SIGTERM: only the task's
	// end (or SIGKILL) ends the monitor. Handled, not ignored, so runc and
	// the task get default dispositions.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGPIPE)
	go func() {
		for s := range sigs {
			m.log.Printf("ignoring signal %v", s)
		}
	}()

	ln, err := m.listen()
	if err != nil {
		report(ready, readyMsg{Error: "monitor: " + err.Error(), Code: errdefs.Code(errdefs.ErrInternal)})
		return err
	}
	defer ln.Close()
	go m.serveWaiters(ln)

	pid, startedAt, copies, err := m.start()
	if err != nil {
		m.log.Printf("start failed: %v", err)
		report(ready, toReady(err))
		m.closeNATS()
		return nil
	}
	m.log.Printf("task %s started, pid %d", m.cfg.ID, pid)

	oomFile, err := oomFileFromRuncState(m.cfg.Root, m.cfg.ID)
	if err != nil {
		m.log.Printf("no OOM accounting: %v", err)
	}
	st := monitorState{Pid: pid, MonitorPid: os.Getpid(), StartedAt: startedAt, OOMFile: oomFile}
	if err := writeJSONAtomic(m.dir, stateFile, st); err != nil {
		m.log.Printf("record state: %v", err)
	}
	report(ready, readyMsg{Pid: pid})

	exit := m.wait(pid)
	exit.StartedAt = startedAt
	if oomFile != "" {
		if n, err := oomKills(oomFile); err != nil {
			m.log.Printf("read OOM counter: %v", err)
		} else {
			exit.OOMKilled = n > 0
		}
	}
	m.log.Printf("task %s exited: code %d %s oom=%v", m.cfg.ID, exit.Code, exit.Signal, exit.OOMKilled)

	// runc's record of the container (its state and cgroup) goes now, while
	// the exit is reported: the cgroup is freed at once, and a removal of the
	// container no longer waits for a runc process (~7 ms). The monitor
	// exits only once it is done, which is what Delete waits for. Forced, so
	// that processes left in the cgroup do not keep it.
	deleted := make(chan struct{})
	go func() {
		defer close(deleted)
		ctx, cancel := context.WithTimeout(context.Background(), runcTimeout)
		defer cancel()
		if err := m.runc.Delete(ctx, m.cfg.ID, &gorunc.DeleteOpts{Force: true}); err != nil {
			m.log.Printf("runc delete: %v", m.runcFailure("delete", err))
		}
	}()
	defer func() { <-deleted }()

	// Everything the task wrote reaches the logs and NATS before anyone
	// learns it exited.
	copies.drain(drainTimeout, m.log)
	if m.stdinW != nil {
		_ = m.stdinW.Close()
	}
	// Flushed, the output is with the server; the connection itself is
	// closed after the exit is reported.
	m.flushNATS()
	defer func() {
		if m.nc != nil {
			m.nc.Close()
		}
	}()

	data, err := json.Marshal(exit)
	if err != nil {
		return fmt.Errorf("encode exit: %w", err)
	}
	if err := writeFileAtomic(m.dir, exitFile, append(data, '\n')); err != nil {
		// Waiters connected now still learn the exit; later ones poll.
		m.log.Printf("record exit: %v", err)
	}
	m.exitJSON = data
	close(m.done)
	_ = ln.Close()
	waited := make(chan struct{})
	go func() { m.waiters.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(time.Second):
	}
	return nil
}

// listen opens the monitor socket in the state dir. The monitor's working
// directory is the state dir (Start sets it), so the relative path stays
// under the sun_path limit however deep the state dir is.
func (m *monitor) listen() (net.Listener, error) {
	if err := os.Chdir(m.dir); err != nil {
		return nil, fmt.Errorf("chdir to state dir: %w", err)
	}
	_ = os.Remove(sockFile)
	ln, err := net.Listen("unix", sockFile)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sockFile, err)
	}
	return ln, nil
}

// serveWaiters answers every connection with the exit once it is recorded,
// then closes it.
func (m *monitor) serveWaiters(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		m.waiters.Add(1)
		go func() {
			defer m.waiters.Done()
			defer c.Close()
			<-m.done
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(append(m.exitJSON, '\n'))
		}()
	}
}

// start connects NATS, sets up the task's stdio and runs runc create and
// runc start. On error nothing of the task is left.
func (m *monitor) start() (pid int, startedAt time.Time, copies *copiers, err error) {
	m.runc = &gorunc.Runc{
		Command:   m.cfg.Runc,
		Root:      m.cfg.Root,
		Log:       filepath.Join(m.dir, runcLog),
		LogFormat: gorunc.JSON,
	}
	uid, gid := bundleUser(m.cfg.Bundle)
	tio, err := newTaskIO(m.cfg.Stdin, uid, gid)
	if err != nil {
		return 0, time.Time{}, nil, classed(errdefs.ErrInternal, "monitor: task stdio: %v", err)
	}
	defer tio.closeTaskEnds()
	m.stdinW = tio.stdinW

	// Connect to NATS while runc starts the container; everything that
	// uses the connection waits for natsDone.
	m.natsDone = make(chan struct{})
	go func() {
		defer close(m.natsDone)
		m.connectNATS()
	}()

	outLog, err := openLog(filepath.Join(m.dir, StdoutLog))
	if err != nil {
		tio.closeAll()
		return 0, time.Time{}, nil, err
	}
	errLog, err := openLog(filepath.Join(m.dir, StderrLog))
	if err != nil {
		_ = outLog.Close()
		tio.closeAll()
		return 0, time.Time{}, nil, err
	}
	copies = &copiers{}
	copies.start(tio.stdoutR, outLog, m.publisher(runtime.StreamStdout), m.log)
	copies.start(tio.stderrR, errLog, m.publisher(runtime.StreamStderr), m.log)
	fail := func(err error) (int, time.Time, *copiers, error) {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.runc.Delete(cctx, m.cfg.ID, &gorunc.DeleteOpts{Force: true})
		tio.closeTaskEnds()
		copies.drain(drainTimeout, m.log)
		if m.stdinW != nil {
			_ = m.stdinW.Close()
		}
		return 0, time.Time{}, nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), runcTimeout)
	defer cancel()
	pidPath := filepath.Join(m.dir, pidFile)
	// One 'runc run --detach' creates and starts the container: a runc
	// process less than create + start, ~10 ms off every task start.
	if _, err := m.runc.Run(ctx, m.cfg.ID, m.cfg.Bundle, &gorunc.CreateOpts{IO: tio, PidFile: pidPath, Detach: true}); err != nil {
		return fail(m.runcFailure("run", err))
	}
	tio.closeTaskEnds()
	data, err := os.ReadFile(pidPath)
	if err != nil {
		return fail(classed(errdefs.ErrInternal, "monitor: read task pid: %v", err))
	}
	pid, err = strconv.Atoi(string(bytes.TrimSpace(data)))
	if err != nil {
		return fail(classed(errdefs.ErrInternal, "monitor: parse task pid %q: %v", data, err))
	}
	// Stdin must be subscribed before anyone learns the task started.
	<-m.natsDone
	return pid, time.Now().UTC(), copies, nil
}

// runcFailure turns a failed runc create/start into an error with runc's
// message and class.
func (m *monitor) runcFailure(op string, err error) error {
	msg := lastRuncLogError(filepath.Join(m.dir, runcLog))
	if msg == "" {
		msg = runcMessage(err.Error())
	}
	if msg == "" {
		msg = "runc " + op + ": " + err.Error()
	}
	return classed(classify(msg), "%s", msg)
}

// wait reaps the task's init and turns its status into an Exit.
func (m *monitor) wait(pid int) runtime.Exit {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Not our child: we can see it end but not how.
			m.log.Printf("wait4 %d: %v; watching it with a pidfd instead", pid, err)
			waitPidfd(pid, m.log)
			return runtime.Exit{Code: -1, Signal: "unknown", ExitedAt: time.Now().UTC()}
		}
		break
	}
	e := runtime.Exit{ExitedAt: time.Now().UTC()}
	switch {
	case ws.Exited():
		e.Code = ws.ExitStatus()
	case ws.Signaled():
		e.Code = 128 + int(ws.Signal())
		e.Signal = unix.SignalName(ws.Signal())
	default:
		e.Code, e.Signal = -1, "unknown"
	}
	return e
}

// waitPidfd blocks until pid exits, for a process that is not our child.
func waitPidfd(pid int, logger *log.Logger) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		logger.Printf("pidfd_open %d: %v", pid, err)
		return
	}
	defer unix.Close(fd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if err != unix.EINTR {
			return
		}
	}
}

// connectNATS connects to NATS and subscribes stdin, if configured. Failing
// to connect never fails the task: the connection keeps retrying in the
// background and output is logged in any case.
func (m *monitor) connectNATS() {
	if m.pre != nil {
		<-m.pre.done
		if m.pre.url == m.cfg.NATSURL && m.pre.nc != nil {
			m.nc = m.pre.nc
		} else if m.pre.nc != nil {
			m.pre.nc.Close() // made for another URL
		}
	}
	if m.cfg.NATSURL == "" {
		return
	}
	if m.nc == nil {
		nc, err := dialNATS(m.cfg.NATSURL, "stevedore-monitor "+m.cfg.ID, m.log)
		if err != nil {
			m.log.Printf("nats: %v; stdio goes to the logs only", err)
			return
		}
		m.nc = nc
	}
	nc := m.nc
	if m.stdinW != nil {
		sub, err := nc.Subscribe(runtime.IOSubject(m.cfg.Namespace, m.cfg.container(), runtime.StreamStdin), m.onStdin)
		if err != nil {
			m.log.Printf("subscribe stdin: %v", err)
		} else {
			_ = sub.SetPendingLimits(-1, 64<<20)
			m.stdinSub = sub
		}
	}
	switch {
	case !nc.IsConnected():
		m.log.Printf("nats at %s not reachable yet; retrying in the background", nc.ConnectedUrlRedacted())
	case m.stdinSub != nil:
		// The server has the subscription before the task is said to run.
		if err := nc.FlushTimeout(natsFlushTimeout); err != nil {
			m.log.Printf("nats flush: %v", err)
		}
	}
}

// dialNATS connects to url for a monitor: it keeps retrying in the
// background if the server cannot be reached now.
func dialNATS(url, name string, logger *log.Logger) (*nats.Conn, error) {
	return nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.Timeout(2*time.Second),
		nats.NoCallbacksAfterClientClose(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Printf("nats disconnected: %v", err)
			}
		}),
	)
}

// preconn is a NATS connection a spare monitor makes while it waits.
type preconn struct {
	url  string
	nc   *nats.Conn    // nil if it failed; set before done is closed
	done chan struct{} // closed once the connection is made (or failed)
}

func preconnect(url string, logger *log.Logger) *preconn {
	p := &preconn{url: url, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if url == "" {
			return
		}
		nc, err := dialNATS(url, "stevedore-monitor", logger)
		if err != nil {
			logger.Printf("nats (ahead of time): %v", err)
			return
		}
		p.nc = nc
	}()
	return p
}

// onStdin writes a stdin message to the task. Messages arrive in order, one
// at a time; a full pipe holds the next ones in the subscription.
func (m *monitor) onStdin(msg *nats.Msg) {
	if m.stdinEOF.Load() {
		return
	}
	if len(msg.Data) > 0 {
		if _, err := m.stdinW.Write(msg.Data); err != nil {
			m.log.Printf("write stdin: %v", err)
		}
	}
	if msg.Header.Get(runtime.HeaderEOF) == "1" {
		m.stdinEOF.Store(true)
		_ = m.stdinW.Close()
	}
}

// publisher returns a func publishing a chunk of stream, or nil without
// NATS.
func (m *monitor) publisher(stream string) func([]byte) error {
	if m.cfg.NATSURL == "" {
		return nil
	}
	subj := runtime.IOSubject(m.cfg.Namespace, m.cfg.container(), stream)
	return func(b []byte) error {
		<-m.natsDone
		if m.nc == nil {
			return nil // could not connect: the logs have it
		}
		return m.nc.Publish(subj, b)
	}
}

// flushNATS stops reading stdin and waits until the server has everything
// published so far.
func (m *monitor) flushNATS() {
	if m.natsDone != nil {
		<-m.natsDone
	}
	if m.nc == nil {
		return
	}
	if m.stdinSub != nil {
		_ = m.stdinSub.Unsubscribe()
	}
	if m.nc.IsConnected() {
		if err := m.nc.FlushTimeout(natsFlushTimeout); err != nil {
			m.log.Printf("nats flush: %v", err)
		}
	}
}

// closeNATS flushes and closes the connection.
func (m *monitor) closeNATS() {
	m.flushNATS()
	if m.nc != nil {
		m.nc.Close()
	}
}

// copiers copy the task's stdout and stderr to their logs and NATS.
type copiers struct {
	wg      sync.WaitGroup
	readers []*os.File
}

func (c *copiers) start(r *os.File, logf *os.File, publish func([]byte) error, logger *log.Logger) {
	c.readers = append(c.readers, r)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer logf.Close()
		buf := make([]byte, 32<<10)
		var logErr, pubErr bool
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if _, werr := logf.Write(buf[:n]); werr != nil && !logErr {
					logErr = true
					logger.Printf("write %s: %v", logf.Name(), werr)
				}
				if publish != nil {
					// Publish copies the bytes into the connection's buffer.
					if perr := publish(buf[:n]); perr != nil && !pubErr {
						pubErr = true
						logger.Printf("publish %s: %v", filepath.Base(logf.Name()), perr)
					}
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
					logger.Printf("read task output: %v", err)
				}
				return
			}
		}
	}()
}

// drain waits until the copiers reach EOF (every writer of the pipes has
// exited), for at most timeout; then it closes the pipes and waits for the
// copiers to stop.
func (c *copiers) drain(timeout time.Duration, logger *log.Logger) {
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		logger.Printf("task output still open %v after exit; closing it", timeout)
		for _, r := range c.readers {
			_ = r.Close()
		}
		<-done
	}
	for _, r := range c.readers {
		_ = r.Close()
	}
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, classed(errdefs.ErrInternal, "monitor: open %s: %v", filepath.Base(path), err)
	}
	return f, nil
}

// taskIO is the task's stdio: pipes whose far ends runc hands to the task.
// It implements go-runc's IO and StartCloser.
type taskIO struct {
	stdinR, stdoutW, stderrW *os.File // the task's ends
	stdinW, stdoutR, stderrR *os.File // ours
}

func newTaskIO(stdin bool, uid, gid int) (*taskIO, error) {
	t := &taskIO{}
	var err error
	if stdin {
		if t.stdinR, t.stdinW, err = os.Pipe(); err != nil {
			return nil, err
		}
	} else if t.stdinR, err = os.Open(os.DevNull); err != nil {
		return nil, err
	}
	if t.stdoutR, t.stdoutW, err = os.Pipe(); err != nil {
		t.closeAll()
		return nil, err
	}
	if t.stderrR, t.stderrW, err = os.Pipe(); err != nil {
		t.closeAll()
		return nil, err
	}
	// A task running as another user can still reopen /dev/stdout.
	for _, f := range []*os.File{t.stdinR, t.stdoutW, t.stderrW} {
		if f.Name() != os.DevNull {
			_ = unix.Fchown(int(f.Fd()), uid, gid)
		}
	}
	return t, nil
}

// Close implements gorunc.IO.
func (t *taskIO) Close() error { t.closeAll(); return nil }

// Stdin implements gorunc.IO.
func (t *taskIO) Stdin() io.WriteCloser {
	if t.stdinW == nil {
		return nil
	}
	return t.stdinW
}

// Stdout implements gorunc.IO.
func (t *taskIO) Stdout() io.ReadCloser { return t.stdoutR }

// Stderr implements gorunc.IO.
func (t *taskIO) Stderr() io.ReadCloser { return t.stderrR }

// Set implements gorunc.IO: runc create gets the task's ends.
func (t *taskIO) Set(cmd *exec.Cmd) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = t.stdinR, t.stdoutW, t.stderrW
}

// CloseAfterStart implements gorunc.StartCloser.
func (t *taskIO) CloseAfterStart() error { t.closeTaskEnds(); return nil }

func (t *taskIO) closeTaskEnds() {
	for _, f := range []*os.File{t.stdinR, t.stdoutW, t.stderrW} {
		if f != nil {
			_ = f.Close()
		}
	}
}

func (t *taskIO) closeAll() {
	t.closeTaskEnds()
	for _, f := range []*os.File{t.stdinW, t.stdoutR, t.stderrR} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// bundleUser reads the task's uid and gid from the bundle's config.json
// (0, 0 if it cannot).
func bundleUser(bundle string) (int, int) {
	var spec struct {
		Process struct {
			User struct {
				UID int `json:"uid"`
				GID int `json:"gid"`
			} `json:"user"`
		} `json:"process"`
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil || json.Unmarshal(data, &spec) != nil {
		return 0, 0
	}
	return spec.Process.User.UID, spec.Process.User.GID
}
