package runc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/runtime"
	"github.com/stevedore/stevedore/pkg/runtime/runc"
	"github.com/stevedore/stevedore/pkg/runtime/runtimetest"
)

// TestMain lets the test binary be the monitor, exactly as the executor's
// main does, and a throwaway "executor" for the restart test.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "monitor" {
		os.Exit(runc.MonitorMain(os.Args[2:]))
	}
	if len(os.Args) > 2 && os.Args[1] == "start-task" {
		os.Exit(fakeExecutor(os.Args[2]))
	}
	os.Exit(m.Run())
}

// fakeExecutorArgs is what the restart test passes its fake executor.
type fakeExecutorArgs struct {
	Config runc.Config
	Opts   runtime.CreateOpts
}

// fakeExecutor starts one task, prints its pid and waits to be killed.
func fakeExecutor(arg string) int {
	var a fakeExecutorArgs
	if err := json.Unmarshal([]byte(arg), &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rt, err := runc.New(a.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pid, err := rt.Start(context.Background(), a.Opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(pid)
	select {}
}

type env struct {
	t         *testing.T
	cfg       runc.Config
	rt        *runc.Runtime
	stateRoot string
}

func monitorCmd(t testing.TB) []string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{self, "monitor"}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	runtimetest.Need(t)
	e := &env{t: t, stateRoot: t.TempDir()}
	e.cfg = runc.Config{Root: t.TempDir(), StateRoot: e.stateRoot, MonitorCmd: monitorCmd(t), StartTimeout: 30 * time.Second}
	rt, err := runc.New(e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.rt = rt
	return e
}

// id returns a task id unique to the test.
func (e *env) id(suffix string) string {
	n := strings.NewReplacer("/", "-", "_", "-").Replace(e.t.Name())
	if len(n) > 80 {
		n = n[len(n)-80:]
	}
	return strings.Trim(strings.ToLower(n), "-") + "-" + suffix
}

// start starts a task from a fresh busybox bundle and arranges for it to be
// killed and deleted, and its monitor gone, before the temp dirs go.
func (e *env) start(id string, o runtimetest.BundleOpts, mod func(*runtime.CreateOpts)) (int, error) {
	e.t.Helper()
	opts := runtime.CreateOpts{ID: id, Namespace: "default", Bundle: runtimetest.Bundle(e.t, o)}
	if mod != nil {
		mod(&opts)
	}
	e.t.Cleanup(func() { e.cleanup(id) })
	return e.rt.Start(context.Background(), opts)
}

func (e *env) mustStart(id string, o runtimetest.BundleOpts, mod func(*runtime.CreateOpts)) int {
	e.t.Helper()
	pid, err := e.start(id, o, mod)
	if err != nil {
		e.t.Fatalf("Start %s: %v", id, err)
	}
	if pid <= 0 {
		e.t.Fatalf("Start %s: pid %d", id, pid)
	}
	return pid
}

func (e *env) cleanup(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := e.rt.State(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return
	}
	if err := e.rt.Delete(ctx, id, true); err != nil {
		e.t.Logf("cleanup: delete %s: %v", id, err)
	}
	for st.MonitorPid != 0 && ctx.Err() == nil {
		if st, err = e.rt.State(ctx, id); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) wait(id string) runtime.Exit {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ex, err := e.rt.Wait(ctx, id)
	if err != nil {
		e.t.Fatalf("Wait %s: %v", id, err)
	}
	return ex
}

func (e *env) log(id, name string) string {
	e.t.Helper()
	data, err := os.ReadFile(filepath.Join(e.stateRoot, id, name))
	if err != nil {
		e.t.Fatalf("read %s: %v", name, err)
	}
	return string(data)
}

func sh(script string) runtimetest.BundleOpts {
	return runtimetest.BundleOpts{Args: []string{"sh", "-c", script}}
}

func TestNewWithoutRunc(t *testing.T) {
	_, err := runc.New(runc.Config{Runc: "/nonexistent/runc", StateRoot: t.TempDir()})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "runc not found: install runc") {
		t.Fatalf("New with a missing runc: %v, want ErrUnavailable saying to install runc", err)
	}
}

func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"zero", []string{"true"}, 0},
		{"three", []string{"sh", "-c", "exit 3"}, 3},
		{"false", []string{"false"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := e.id(tc.name)
			e.mustStart(id, runtimetest.BundleOpts{Args: tc.args}, nil)
			ex := e.wait(id)
			if ex.Code != tc.code || ex.Signal != "" || ex.OOMKilled {
				t.Errorf("exit = %+v, want code %d", ex, tc.code)
			}
			if ex.StartedAt.IsZero() || ex.ExitedAt.Before(ex.StartedAt) {
				t.Errorf("times: started %v exited %v", ex.StartedAt, ex.ExitedAt)
			}
		})
	}
}

func TestSignals(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		o      runtimetest.BundleOpts
		sig    syscall.Signal
		code   int
		signal string
	}{
		// SIGTERM to a pid-namespace init without a handler is dropped by
		// the kernel, so this task runs in the host pid namespace.
		{"sigterm", runtimetest.BundleOpts{Args: []string{"sleep", "100"}, NoPIDNamespace: true}, syscall.SIGTERM, 143, "SIGTERM"},
		{"sigkill", runtimetest.BundleOpts{Args: []string{"sleep", "100"}}, syscall.SIGKILL, 137, "SIGKILL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := e.id(tc.name)
			e.mustStart(id, tc.o, nil)
			st, err := e.rt.State(context.Background(), id)
			if err != nil || st.Status != runtime.StatusRunning || st.MonitorPid == 0 {
				t.Fatalf("State = %+v, %v; want running with a monitor", st, err)
			}
			if err := e.rt.Kill(context.Background(), id, tc.sig); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			ex := e.wait(id)
			if ex.Code != tc.code || ex.Signal != tc.signal {
				t.Errorf("exit = %+v, want %d %s", ex, tc.code, tc.signal)
			}
			if err := e.rt.Kill(context.Background(), id, tc.sig); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("Kill of a stopped task: %v, want ErrFailedPrecondition", err)
			}
		})
	}
}

func TestStdioToLogs(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	// Many lines, then the last words right before exiting.
	e.mustStart(id, sh(`echo out1; echo err1 >&2; seq 1 5000; printf tail-out; printf tail-err >&2; exit 7`), nil)
	ex := e.wait(id)
	if ex.Code != 7 {
		t.Fatalf("exit = %+v, want 7", ex)
	}
	out, errOut := e.log(id, runc.StdoutLog), e.log(id, runc.StderrLog)
	if !strings.HasPrefix(out, "out1\n1\n2\n") || !strings.HasSuffix(out, "\n5000\ntail-out") {
		t.Errorf("stdout.log: %d bytes, head %q tail %q", len(out), head(out), tailOf(out))
	}
	if errOut != "err1\ntail-err" {
		t.Errorf("stderr.log = %q, want %q", errOut, "err1\ntail-err")
	}
}

func head(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}

func tailOf(s string) string {
	if len(s) > 40 {
		return s[len(s)-40:]
	}
	return s
}

func TestCommandNotFound(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	_, err := e.start(id, runtimetest.BundleOpts{Args: []string{"nosuch"}}, nil)
	if err == nil {
		t.Fatal("Start of a missing command succeeded")
	}
	t.Logf("Start: %v", err)
	if !strings.Contains(err.Error(), `"nosuch"`) || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Start error %q: want ErrInvalidArgument naming \"nosuch\"", err)
	}
	if _, err := e.rt.State(context.Background(), id); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("State after a failed Start: %v, want ErrNotFound", err)
	}
	list, err := e.rt.List(context.Background())
	if err != nil || len(list) != 0 {
		t.Errorf("List after a failed Start = %+v, %v; want nothing", list, err)
	}
	if pids := processesMentioning(filepath.Join(e.stateRoot, id)); len(pids) > 0 {
		t.Errorf("processes left running: %v", pids)
	}
}

// processesMentioning returns the pids whose command line contains s.
func processesMentioning(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmd, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestStdinAndStdoutOverNATS runs three tasks one after another: the first
// with a monitor started for it, the next ones with the spare started ahead
// of time, which connected to NATS while it waited.
func TestStdinAndStdoutOverNATS(t *testing.T) {
	e := newEnv(t)
	srv := natstest.Start(t)
	for i := range 3 {
		stdinAndStdoutOverNATS(t, e, srv, e.id(fmt.Sprint(i)))
		time.Sleep(300 * time.Millisecond) // the spare is started 100 ms after a start
	}
}

func stdinAndStdoutOverNATS(t *testing.T, e *env, srv *natstest.Server, id string) {
	var mu sync.Mutex
	var got bytes.Buffer
	sub, err := srv.Conn.Subscribe(runtime.IOSubject("default", id, runtime.StreamStdout), func(m *nats.Msg) {
		mu.Lock()
		got.Write(m.Data)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := srv.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	e.mustStart(id, runtimetest.BundleOpts{Args: []string{"cat"}}, func(o *runtime.CreateOpts) {
		o.Stdin = true
		o.NATSURL = srv.URL()
	})
	stdin := runtime.IOSubject("default", id, runtime.StreamStdin)
	for _, s := range []string{"hello\n", "world\n"} {
		if err := srv.Conn.Publish(stdin, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// cat keeps running until stdin ends.
	time.Sleep(100 * time.Millisecond)
	if st, err := e.rt.State(context.Background(), id); err != nil || st.Status != runtime.StatusRunning {
		t.Fatalf("cat before EOF: %+v, %v; want running", st, err)
	}
	eof := nats.NewMsg(stdin)
	eof.Header.Set(runtime.HeaderEOF, "1")
	eof.Data = []byte("bye\n")
	if err := srv.Conn.PublishMsg(eof); err != nil {
		t.Fatal(err)
	}
	ex := e.wait(id)
	if ex.Code != 0 {
		t.Fatalf("exit = %+v, want 0", ex)
	}
	want := "hello\nworld\nbye\n"
	if out := e.log(id, runc.StdoutLog); out != want {
		t.Errorf("stdout.log = %q, want %q", out, want)
	}
	// The monitor flushed before reporting the exit; allow for delivery.
	natstest.Eventually(t, 2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got.String() == want
	}, "stdout on NATS = %q, want %q", &got, want)
}

func TestNATSUnreachable(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, sh("echo still-logged"), func(o *runtime.CreateOpts) { o.NATSURL = "nats://127.0.0.1:1" })
	if ex := e.wait(id); ex.Code != 0 {
		t.Fatalf("exit = %+v", ex)
	}
	if out := e.log(id, runc.StdoutLog); out != "still-logged\n" {
		t.Errorf("stdout.log = %q", out)
	}
}

func TestWaitLatency(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, sh("sleep 0.3"), nil)
	ex := e.wait(id)
	returned := time.Now()
	lat := returned.Sub(ex.ExitedAt)
	t.Logf("Wait returned %v after the monitor reaped the task", lat)
	if lat < 0 || lat > 2*time.Second {
		t.Errorf("Wait latency %v, want well under 2s", lat)
	}

	// Kill to Wait, the path of `run --rm` after a ^C.
	id2 := e.id("kill")
	e.mustStart(id2, runtimetest.BundleOpts{Args: []string{"sleep", "100"}}, nil)
	done := make(chan time.Time, 1)
	go func() { _, _ = e.rt.Wait(context.Background(), id2); done <- time.Now() }()
	time.Sleep(50 * time.Millisecond)
	killed := time.Now()
	if err := e.rt.Kill(context.Background(), id2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-done:
		t.Logf("Kill to Wait return: %v", at.Sub(killed))
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not return within 2s of SIGKILL")
	}
}

// TestExecutorRestart starts a task from a separate "executor" process,
// SIGKILLs that process, and carries on with a new Runtime on the same
// roots: the task keeps running, is listed, can be killed, and its exit
// code is not lost.
func TestExecutorRestart(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	bundle := runtimetest.Bundle(t, sh(`trap "exit 42" TERM; while :; do sleep 0.05; done`))
	t.Cleanup(func() { e.cleanup(id) })
	arg, err := json.Marshal(fakeExecutorArgs{Config: e.cfg, Opts: runtime.CreateOpts{ID: id, Namespace: "default", Bundle: bundle}})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	cmd := exec.Command(self, "start-task", string(arg))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("fake executor: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	// The executor dies hard.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	rt2, err := runc.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	list, err := rt2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || list[0].Status != runtime.StatusRunning || list[0].Pid != pid || list[0].MonitorPid == 0 {
		t.Fatalf("List after the executor died = %+v, want %s running as pid %d with its monitor", list, id, pid)
	}
	if _, ok, err := rt2.Exit(ctx, id); ok || err != nil {
		t.Fatalf("Exit of a running task: ok=%v err=%v", ok, err)
	}
	if err := rt2.Kill(ctx, id, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ex, err := rt2.Wait(wctx, id)
	if err != nil || ex.Code != 42 {
		t.Fatalf("Wait on the new runtime = %+v, %v; want code 42", ex, err)
	}
}

// TestExitRecordedWithoutWaiter: the task ends while nobody waits; its exit
// is there later, for this Runtime and for a new one.
func TestExitRecordedWithoutWaiter(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, sh("exit 5"), nil)
	ctx := context.Background()
	var ex runtime.Exit
	natstest.Eventually(t, 10*time.Second, func() bool {
		var ok bool
		var err error
		ex, ok, err = e.rt.Exit(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "no exit recorded for %s", id)
	if ex.Code != 5 {
		t.Errorf("Exit = %+v, want 5", ex)
	}
	rt2, err := runc.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		st, err := rt2.State(ctx, id)
		return err == nil && st.Status == runtime.StatusStopped && st.MonitorPid == 0
	}, "task not stopped with its monitor gone")
	if ex2, err := rt2.Wait(ctx, id); err != nil || ex2 != ex {
		t.Errorf("Wait on a new runtime = %+v, %v; want %+v", ex2, err, ex)
	}
}

// TestMonitorKilled: with its monitor SIGKILLed the task's exit cannot be
// known; Wait still returns once the task is gone, with code -1.
func TestMonitorKilled(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, runtimetest.BundleOpts{Args: []string{"sleep", "100"}}, nil)
	ctx := context.Background()
	st, err := e.rt.State(ctx, id)
	if err != nil || st.MonitorPid == 0 {
		t.Fatalf("State = %+v, %v", st, err)
	}
	if err := syscall.Kill(st.MonitorPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		st, err := e.rt.State(ctx, id)
		return err == nil && st.MonitorPid == 0 && st.Status == runtime.StatusRunning
	}, "monitor still listed")
	done := make(chan runtime.Exit, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ex, err := e.rt.Wait(wctx, id)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		done <- ex
	}()
	time.Sleep(150 * time.Millisecond)
	if err := e.rt.Kill(ctx, id, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ex := <-done
	if ex.Code != -1 || ex.Signal != "unknown" {
		t.Errorf("exit = %+v, want -1 unknown", ex)
	}
}

func TestDelete(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, sh("echo before; exec sleep 100"), nil)
	ctx := context.Background()
	if err := e.rt.Delete(ctx, id, false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Delete of a running task without force: %v, want ErrFailedPrecondition", err)
	}
	if err := e.rt.Delete(ctx, id, true); err != nil {
		t.Fatalf("Delete with force: %v", err)
	}
	ex, ok, err := e.rt.Exit(ctx, id)
	if err != nil || !ok || ex.Code != 137 {
		t.Errorf("Exit after a forced delete = %+v, %v, %v; want 137", ex, ok, err)
	}
	st, err := e.rt.State(ctx, id)
	if err != nil || st.Status != runtime.StatusStopped {
		t.Errorf("State after delete = %+v, %v; want stopped", st, err)
	}
	if out := e.log(id, runc.StdoutLog); out != "before\n" {
		t.Errorf("logs not kept: stdout.log = %q", out)
	}
	if err := e.rt.Delete(ctx, id, false); err != nil {
		t.Errorf("second Delete: %v, want nil", err)
	}
}

// TestExitRemovesRuncRecord: once a task exited, its monitor removes runc's
// record (state and cgroup) by itself; the task still reads as stopped with
// its exit, and Delete has nothing left to do.
func TestExitRemovesRuncRecord(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, sh("exit 3"), nil)
	if ex := e.wait(id); ex.Code != 3 {
		t.Fatalf("exit = %+v, want 3", ex)
	}
	ctx := context.Background()
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.cfg.Root, id))
		return errors.Is(err, os.ErrNotExist)
	}, "runc still has a record of %s after its exit", id)
	out, err := exec.Command("runc", "--root", e.cfg.Root, "list", "-q").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), id) {
		t.Errorf("runc list still shows %s:\n%s", id, out)
	}
	st, err := e.rt.State(ctx, id)
	if err != nil || st.Status != runtime.StatusStopped {
		t.Errorf("State = %+v, %v; want stopped", st, err)
	}
	if ex, ok, err := e.rt.Exit(ctx, id); err != nil || !ok || ex.Code != 3 {
		t.Errorf("Exit = %+v, %v, %v; want 3", ex, ok, err)
	}
	if err := e.rt.Delete(ctx, id, false); err != nil {
		t.Errorf("Delete: %v, want nil", err)
	}
	if err := e.rt.Delete(ctx, id, true); err != nil {
		t.Errorf("forced Delete: %v, want nil", err)
	}
}

func TestUnknownTask(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.rt.Wait(ctx, "nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Wait: %v", err)
	}
	if _, err := e.rt.State(ctx, "nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("State: %v", err)
	}
	if _, _, err := e.rt.Exit(ctx, "nosuch"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Exit: %v", err)
	}
	if err := e.rt.Kill(ctx, "nosuch", syscall.SIGTERM); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Kill: %v", err)
	}
	if err := e.rt.Delete(ctx, "nosuch", true); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Delete: %v", err)
	}
	if _, err := e.rt.Start(ctx, runtime.CreateOpts{ID: "bad.id", Namespace: "default", Bundle: "/x"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Start with a bad id: %v", err)
	}
}

func TestStateDirElsewhere(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	dir := filepath.Join(t.TempDir(), "a", "rather", "deep", "state", "dir", "that", "is", "long", "enough", "to", "exceed", "sun_path", id)
	e.mustStart(id, sh("echo hi"), func(o *runtime.CreateOpts) { o.StateDir = dir })
	if ex := e.wait(id); ex.Code != 0 {
		t.Fatalf("exit = %+v", ex)
	}
	if out, err := os.ReadFile(filepath.Join(dir, runc.StdoutLog)); err != nil || string(out) != "hi\n" {
		t.Errorf("stdout.log = %q, %v", out, err)
	}
	if err := e.rt.Delete(context.Background(), id, false); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if list, err := e.rt.List(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("List after the state dir was removed = %+v, %v", list, err)
	}
}

func TestOOMKilled(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, runtimetest.BundleOpts{
		Args:        []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"},
		MemoryLimit: 16 << 20,
	}, nil)
	ex := e.wait(id)
	t.Logf("exit %+v; monitor log:\n%s", ex, e.log(id, runc.MonitorLog))
	if !ex.OOMKilled || ex.Code != 137 {
		t.Errorf("exit = %+v, want 137 and OOMKilled; stderr: %q", ex, e.log(id, runc.StderrLog))
	}
}

func TestMonitorFailures(t *testing.T) {
	runtimetest.Need(t)
	tests := []struct {
		name    string
		cmd     []string
		timeout time.Duration
		want    string
	}{
		{"exits without reporting", []string{"/bin/false"}, 10 * time.Second, "monitor exited without reporting"},
		{"never reports", []string{"/bin/sh", "-c", "sleep 5", "sh"}, 300 * time.Millisecond, "did not report within"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stateRoot := t.TempDir()
			rt, err := runc.New(runc.Config{Root: t.TempDir(), StateRoot: stateRoot, MonitorCmd: tc.cmd, StartTimeout: tc.timeout})
			if err != nil {
				t.Fatal(err)
			}
			bundle := runtimetest.Bundle(t, runtimetest.BundleOpts{Args: []string{"true"}})
			began := time.Now()
			_, err = rt.Start(context.Background(), runtime.CreateOpts{ID: "t", Namespace: "default", Bundle: bundle})
			if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start = %v, want ErrUnavailable with %q", err, tc.want)
			}
			if d := time.Since(began); d > tc.timeout+3*time.Second {
				t.Errorf("Start took %v", d)
			}
			if _, err := os.Stat(filepath.Join(stateRoot, "t")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state dir left after a failed Start: %v", err)
			}
		})
	}
}

func TestStartTwice(t *testing.T) {
	e := newEnv(t)
	id := e.id("t")
	e.mustStart(id, runtimetest.BundleOpts{Args: []string{"sleep", "100"}}, nil)
	if _, err := e.rt.Start(context.Background(), runtime.CreateOpts{ID: id, Namespace: "default", Bundle: runtimetest.Bundle(t, sh("true"))}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Start: %v, want ErrAlreadyExists", err)
	}
	if st, err := e.rt.State(context.Background(), id); err != nil || st.Status != runtime.StatusRunning || st.MonitorPid == 0 {
		t.Errorf("first task after a second Start = %+v, %v", st, err)
	}
}
