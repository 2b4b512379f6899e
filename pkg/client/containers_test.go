package client_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/client/clienttest"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

const (
	node   = "node-1"
	alpine = "docker.io/library/alpine:3.20"
)

// cluster is a real NATS server with the stand-in gateway and executor.
func cluster(t *testing.T) (*clienttest.Fake, *client.Client) {
	t.Helper()
	s := natstest.Start(t)
	nc, js := s.Connect(t)
	f := clienttest.Start(t, nc, js, node, alpine, "docker.io/library/broken:1")
	return f, newClient(t, s)
}

// buffer is a bytes.Buffer safe for concurrent use.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func lines(n int) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, "line %d\n", i)
	}
	return sb.String()
}

func TestRunStreamsOutputAndReturnsTheExitCode(t *testing.T) {
	f, c := cluster(t)
	var stdout, stderr buffer
	code, err := c.Run(ctxT(t), client.RunOptions{
		Image:         "alpine:3.20",
		Options:       events.ContainerOptions{Args: []string{"out:hello", "err:oops", "lines:2000", "exit:3"}},
		AttachOptions: client.AttachOptions{Stdout: &stdout, Stderr: &stderr},
	})
	if err != nil || code != 3 {
		t.Fatalf("Run = %d, %v; want 3", code, err)
	}
	// Every line was written before Run returned, to its own stream.
	if want := "hello\n" + lines(2000); stdout.String() != want {
		t.Fatalf("stdout has %d bytes, want %d", len(stdout.String()), len(want))
	}
	if stderr.String() != "oops\n" {
		t.Fatalf("stderr = %q", stderr.String())
	}
	if p := f.Pulls(); len(p) != 0 {
		t.Fatalf("pulled %v, but the image is unpacked on the node", p)
	}
	cr := f.Creates()
	if len(cr) != 1 || !cr[0].Start || cr[0].Rm || cr[0].Stdin || cr[0].Image != alpine || !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(cr[0].ID) {
		t.Fatalf("create requests %+v", cr)
	}
	if !f.Exists("", cr[0].ID) {
		t.Fatal("the container is gone without --rm")
	}
}

func TestRunRmWaitsForTheRemoval(t *testing.T) {
	f, c := cluster(t)
	var stdout buffer
	start := time.Now()
	code, err := c.Run(ctxT(t), client.RunOptions{
		Image: alpine, ID: "web", Rm: true,
		Options:       events.ContainerOptions{Args: []string{"out:bye", "exit:0"}},
		AttachOptions: client.AttachOptions{Stdout: &stdout},
	})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if f.Exists("", "web") {
		t.Fatal("Run returned before the container was removed")
	}
	if time.Since(start) < clienttest.RmDelay {
		t.Fatal("Run returned before the executor could have removed the container")
	}
	if stdout.String() != "bye\n" {
		t.Fatalf("stdout %q", stdout.String())
	}
	if cr := f.Creates(); !cr[0].Rm || cr[0].ID != "web" {
		t.Fatalf("create %+v", cr[0])
	}
	// A task that cannot start: its container is removed too before Run
	// returns the start failure.
	code, err = c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "nostart", Rm: true, Options: events.ContainerOptions{Args: []string{"nope"}}})
	var re *client.RunError
	if code != -1 || !errors.As(err, &re) || re.Stage != client.StageStart {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if f.Exists("", "nostart") {
		t.Fatal("Run returned before the container that could not start was removed")
	}
}

func TestRunFailures(t *testing.T) {
	_, c := cluster(t)
	tests := []struct {
		name  string
		o     client.RunOptions
		stage string
		class error
		msg   string
	}{
		{"pull fails", client.RunOptions{Image: "missing:1"}, client.StagePull, errdefs.ErrNotFound,
			"pull missing:1: docker.io/library/missing:1: manifest unknown"},
		{"never pull", client.RunOptions{Image: "busybox:1", Pull: client.PullNever}, client.StagePull, errdefs.ErrNotFound,
			"image busybox:1 is not unpacked on any node, and the pull policy is never"},
		{"create fails", client.RunOptions{Image: "docker.io/library/broken:1", ID: "c1"}, client.StageCreate, errdefs.ErrDataLoss,
			"create container c1: image docker.io/library/broken:1: a layer does not match its digest"},
		{"start fails", client.RunOptions{Image: alpine, ID: "c2", Options: events.ContainerOptions{Args: []string{"nope"}}}, client.StageStart, errdefs.ErrInvalidArgument,
			`start container c2: exec: "nope": executable file not found in $PATH`},
		{"bad id", client.RunOptions{Image: alpine, ID: "a.b"}, client.StageCreate, errdefs.ErrInvalidArgument, `container id "a.b"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, err := c.Run(ctxT(t), tt.o)
			var re *client.RunError
			if code != -1 || !errors.As(err, &re) || re.Stage != tt.stage || !errors.Is(err, tt.class) {
				t.Fatalf("Run = %d, %v (%#v); want stage %s class %v", code, err, re, tt.stage, tt.class)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("message %q, want %q", err.Error(), tt.msg)
			}
		})
	}
}

func TestRunPullsAMissingImage(t *testing.T) {
	f, c := cluster(t)
	var w watcher
	code, err := c.Run(ctxT(t), client.RunOptions{Image: "busybox:1", Options: events.ContainerOptions{Platform: "linux/arm64"}, PullWatcher: &w})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	p := f.Pulls()
	if len(p) != 1 || !p[0].Unpack || p[0].Ref != "busybox:1" || p[0].Platform != "linux/arm64" {
		t.Fatalf("pulls %+v", p)
	}
	if cr := f.Creates(); cr[0].Image != "docker.io/library/busybox:1" {
		t.Fatalf("created from %q, want the pulled name", cr[0].Image)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ref != "docker.io/library/busybox:1" || w.updates == 0 || !w.ended || w.err != nil {
		t.Fatalf("watcher %+v", &w)
	}
	// Now it is there: no second pull.
	if _, err := c.Run(ctxT(t), client.RunOptions{Image: "busybox:1", Options: events.ContainerOptions{Platform: "linux/arm64"}}); err != nil {
		t.Fatal(err)
	}
	if len(f.Pulls()) != 1 {
		t.Fatal("pulled an image that is unpacked")
	}
	if _, err := c.Run(ctxT(t), client.RunOptions{Image: "busybox:1", Pull: client.PullAlways}); err != nil || len(f.Pulls()) != 2 {
		t.Fatalf("pull always: %v, %d pulls", err, len(f.Pulls()))
	}
}

type watcher struct {
	mu      sync.Mutex
	ref     string
	updates int
	ended   bool
	err     error
}

func (w *watcher) Pulling(op api.OpReply) { w.mu.Lock(); w.ref = op.Ref; w.mu.Unlock() }
func (w *watcher) Update(client.Update)   { w.mu.Lock(); w.updates++; w.mu.Unlock() }
func (w *watcher) Pulled(err error)       { w.mu.Lock(); w.ended, w.err = true, err; w.mu.Unlock() }

func TestRunForwardsStdinThenEOF(t *testing.T) {
	f, c := cluster(t)
	in := make([]byte, 100<<10) // several chunks
	_, _ = rand.Read(in)
	var stdout buffer
	code, err := c.Run(ctxT(t), client.RunOptions{
		Image: alpine, ID: "cat",
		Options:       events.ContainerOptions{Args: []string{"cat", "out:done"}},
		AttachOptions: client.AttachOptions{Stdin: bytes.NewReader(in), Stdout: &stdout},
	})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	got, eof := f.Stdin("", "cat")
	if !bytes.Equal(got, in) || !eof {
		t.Fatalf("task read %d bytes (eof %v), want %d and eof", len(got), eof, len(in))
	}
	if stdout.String() != string(in)+"done\n" {
		t.Fatalf("stdout has %d bytes", len(stdout.String()))
	}
	if cr := f.Creates(); !cr[0].Stdin {
		t.Fatal("create did not ask for stdin")
	}
}

func TestRunForwardsSignals(t *testing.T) {
	f, c := cluster(t)
	sigs := make(chan string, 1)
	go func() {
		// As soon as the container is asked for, before its task may have
		// started: a signal is held until it has.
		for len(f.Creates()) == 0 {
			time.Sleep(time.Millisecond)
		}
		sigs <- "SIGINT"
	}()
	var warned []error
	code, err := c.Run(ctxT(t), client.RunOptions{
		Image: alpine, ID: "waiter",
		Options: events.ContainerOptions{Args: []string{"wait"}},
		AttachOptions: client.AttachOptions{Signals: sigs, Warn: func(err error) {
			warned = append(warned, err)
		}},
	})
	if err != nil || code != 130 {
		t.Fatalf("Run = %d, %v; want 130", code, err)
	}
	if k := f.Kills(); len(k) != 1 || k[0].Signal != "SIGINT" || k[0].ID != "waiter" {
		t.Fatalf("kills %+v", k)
	}
	if len(warned) != 0 {
		t.Fatalf("warnings %v", warned)
	}
}

func TestRunInterruptedWhilePulling(t *testing.T) {
	f, c := cluster(t)
	sigs := make(chan string, 1)
	go func() { time.Sleep(100 * time.Millisecond); sigs <- "SIGINT" }()
	code, err := c.Run(ctxT(t), client.RunOptions{Image: "slow:1", AttachOptions: client.AttachOptions{Signals: sigs}})
	if code != -1 || !errors.Is(err, client.ErrInterrupted) || !strings.Contains(err.Error(), "the pull of slow:1 goes on") {
		t.Fatalf("Run = %d, %v", code, err)
	}
	// The container was asked for once, refused for want of the image; not
	// again after the interrupted pull.
	if cr := f.Creates(); len(cr) != 1 || f.Exists("", cr[0].ID) {
		t.Fatalf("container requests after an interrupted pull: %+v", cr)
	}
}

func TestRunDetach(t *testing.T) {
	f, c := cluster(t)
	code, err := c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "bg", Detach: true, Options: events.ContainerOptions{Args: []string{"wait"}}})
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	ctr, err := c.Container(ctxT(t), "bg")
	if err != nil || ctr.Task.Status != api.TaskRunning {
		t.Fatalf("container %+v, %v", ctr, err)
	}
	if _, err := c.ContainerKill(ctxT(t), "bg", "KILL"); err != nil {
		t.Fatal(err)
	}
	exit, err := c.WaitExit(ctxT(t), "bg")
	if err != nil || exit.Code != 137 || exit.Signal != "SIGKILL" {
		t.Fatalf("WaitExit = %+v, %v", exit, err)
	}
	if cr := f.Creates(); cr[0].Stdin {
		t.Fatal("a detached container asked for stdin")
	}
	_, err = c.Run(ctxT(t), client.RunOptions{Image: alpine, Detach: true, AttachOptions: client.AttachOptions{Stdin: strings.NewReader("x")}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("detach with stdin: %v", err)
	}
}

func TestWaitExit(t *testing.T) {
	_, c := cluster(t)
	if _, err := c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "five", Options: events.ContainerOptions{Args: []string{"exit:5"}}}); err != nil {
		t.Fatal(err)
	}
	// Labels recorded after the exit do not hide it.
	if _, err := c.ContainerLabel(ctxT(t), "five", map[string]string{"a": "1"}); err != nil {
		t.Fatal(err)
	}
	exit, err := c.WaitExit(ctxT(t), "five")
	if err != nil || exit.Code != 5 {
		t.Fatalf("WaitExit = %+v, %v", exit, err)
	}
	if _, err := c.WaitExit(ctxT(t), "nobody"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unknown container: %v", err)
	}
	if _, err := c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "bad", Options: events.ContainerOptions{Args: []string{"nope"}}}); err == nil {
		t.Fatal("started")
	}
	if _, err := c.WaitExit(ctxT(t), "bad"); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "executable file not found") {
		t.Fatalf("never started: %v", err)
	}
	// One still running: WaitExit follows it live.
	if _, err := c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "later", Detach: true, Options: events.ContainerOptions{Args: []string{"sleep:300", "exit:7"}}}); err != nil {
		t.Fatal(err)
	}
	exit, err = c.WaitExit(ctxT(t), "later")
	if err != nil || exit.Code != 7 {
		t.Fatalf("WaitExit = %+v, %v", exit, err)
	}
}

func TestContainerLifecycle(t *testing.T) {
	f, c := cluster(t)
	id, err := c.Create(ctxT(t), client.RunOptions{Image: alpine, ID: "made", Options: events.ContainerOptions{Args: []string{"out:hi", "err:warn", "exit:2"}}})
	if err != nil || id != "made" {
		t.Fatalf("Create = %q, %v", id, err)
	}
	if cr := f.Creates(); cr[0].Start {
		t.Fatal("Create asked for a start")
	}
	ctr, err := c.Container(ctxT(t), "made")
	if err != nil || ctr.Task.Status != api.TaskCreated || len(ctr.Spec) == 0 {
		t.Fatalf("info %+v, %v", ctr, err)
	}
	var stdout, stderr buffer
	code, err := c.StartAttached(ctxT(t), "made", client.AttachOptions{Stdout: &stdout, Stderr: &stderr})
	if err != nil || code != 2 || stdout.String() != "hi\n" || stderr.String() != "warn\n" {
		t.Fatalf("StartAttached = %d, %v, %q, %q", code, err, stdout.String(), stderr.String())
	}
	for _, stream := range []string{"stdout", "stderr"} {
		var got []byte
		for {
			b, err := c.TaskLogs(ctxT(t), node, "made", stream, int64(len(got)))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 {
				break
			}
			got = append(got, b...)
		}
		if want := map[string]string{"stdout": "hi\n", "stderr": "warn\n"}[stream]; string(got) != want {
			t.Fatalf("%s log %q, want %q", stream, got, want)
		}
	}
	if _, err := c.ContainerLabel(ctxT(t), "made", map[string]string{"team": "a"}); err != nil {
		t.Fatal(err)
	}
	list, err := c.Containers(ctxT(t))
	if err != nil || len(list) != 1 || list[0].Labels["team"] != "a" || *list[0].Task.ExitCode != 2 || list[0].Spec != nil {
		t.Fatalf("list %+v, %v", list, err)
	}
	op, err := c.ContainerDelete(ctxT(t), "made", false)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := c.WaitContainerOp(ctxT(t), "made", op, events.TypeContainerDeleted); err != nil || ev.Type != events.TypeContainerDeleted {
		t.Fatalf("delete: %v, %v", ev, err)
	}
	if _, err := c.Container(ctxT(t), "made"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("info after delete: %v", err)
	}

	t.Run("a running container is not removed without force", func(t *testing.T) {
		if _, err := c.Run(ctxT(t), client.RunOptions{Image: alpine, ID: "busy", Detach: true, Options: events.ContainerOptions{Args: []string{"wait"}}}); err != nil {
			t.Fatal(err)
		}
		op, err := c.ContainerDelete(ctxT(t), "busy", false)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.WaitContainerOp(ctxT(t), "busy", op, events.TypeContainerDeleted)
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "is running") {
			t.Fatalf("err = %v", err)
		}
		if op, err = c.ContainerDelete(ctxT(t), "busy", true); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitContainerOp(ctxT(t), "busy", op, events.TypeContainerDeleted); err != nil {
			t.Fatal(err)
		}
		if exit, err := c.WaitExit(ctxT(t), "busy"); err != nil || exit.Code != 137 {
			t.Fatalf("exit of a removed container: %+v, %v", exit, err)
		}
	})
	t.Run("start attached with rm waits for the removal", func(t *testing.T) {
		if _, err := c.Create(ctxT(t), client.RunOptions{Image: alpine, ID: "gone", Rm: true}); err != nil {
			t.Fatal(err)
		}
		var out buffer
		code, err := c.StartAttached(ctxT(t), "gone", client.AttachOptions{Stdout: &out})
		if err != nil || code != 0 || out.String() != "hello\n" || f.Exists("", "gone") {
			t.Fatalf("StartAttached = %d, %v, %q, exists %v", code, err, out.String(), f.Exists("", "gone"))
		}
	})
}

func TestTaskLogsNoExecutor(t *testing.T) {
	_, c := cluster(t)
	_, err := c.TaskLogs(ctxT(t), "node-9", "x", "stdout", 0)
	var ne *client.NoExecutorError
	if !errors.As(err, &ne) || ne.Node != "node-9" || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.TaskLogs(ctxT(t), node, "x", "both", 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad stream: %v", err)
	}
}

func TestContainerIDs(t *testing.T) {
	for _, id := range []string{"web", "a_b-c", "0abc", strings.Repeat("a", 128), client.NewContainerID()} {
		if err := client.ValidateContainerID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "a.b", "a b", "-a", "a*", "a>", strings.Repeat("a", 129)} {
		if err := client.ValidateContainerID(id); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q accepted", id)
		}
	}
	if a, b := client.NewContainerID(), client.NewContainerID(); a == b || len(a) != 24 {
		t.Fatalf("ids %q %q", a, b)
	}
}
