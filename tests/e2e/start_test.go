package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stevedore/stevedore/pkg/events"
)

// containerEvents returns container id's events, oldest first.
func (c *cluster) containerEvents(id string) []events.Envelope {
	c.t.Helper()
	var out []events.Envelope
	for _, line := range strings.Split(strings.TrimSpace(c.mustCtl("events", "--container", id, "--no-follow", "--format", "json")), "\n") {
		if line == "" {
			continue
		}
		var ev events.Envelope
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			c.t.Fatalf("events --format json: %v\n%s", err, line)
		}
		out = append(out, ev)
	}
	return out
}

// countEvents counts container id's events of type typ.
func (c *cluster) countEvents(id string, typ events.Type) int {
	c.t.Helper()
	n := 0
	for _, ev := range c.containerEvents(id) {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// startedCtl is a ctl command started in the background.
type startedCtl struct {
	cmd         *exec.Cmd
	out, errOut bytes.Buffer
}

func (c *cluster) startCtl(args ...string) *startedCtl {
	c.t.Helper()
	s := &startedCtl{cmd: c.ctlCmd(args...)}
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.errOut
	if err := s.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	return s
}

// wait waits for the command to exit; one still running after a minute is
// killed and fails the test.
func (s *startedCtl) wait(t *testing.T) result {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-done
		t.Fatalf("ctl %s still running after a minute\nstdout: %q\nstderr: %q", strings.Join(s.cmd.Args[1:], " "), s.out.String(), s.errOut.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run ctl: %v", err)
	}
	return result{s.out.String(), s.errOut.String(), code}
}

// oneWins checks that of two ctl starts exactly one succeeded and the other
// failed saying why (want in its message).
func oneWins(t *testing.T, a, b result, want string) {
	t.Helper()
	if (a.code == 0) == (b.code == 0) {
		t.Fatalf("two starts of one container: exits %d and %d, want exactly one to succeed\nfirst: %q %q\nsecond: %q %q",
			a.code, b.code, a.stdout, a.stderr, b.stdout, b.stderr)
	}
	lost := a
	if a.code == 0 {
		lost = b
	}
	if !strings.Contains(lost.stderr, want) {
		t.Fatalf("the refused start said %q, want it to say %q", lost.stderr, want)
	}
}

// TestStartTwiceAtOnce starts one container twice at once: exactly one task
// starts and the other ctl start fails saying why — refused by the gateway
// while the first start is pending, or, for a start that got past it
// because another event came in between, refused by the executor.
func TestStartTwiceAtOnce(t *testing.T) {
	c, img := busyboxCluster(t)
	c.mustCtl("create", "--name", "twice", img, "sleep", "100")

	var wg sync.WaitGroup
	var rs [2]result
	for i := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := c.ctlCmd("start", "twice")
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				rs[i] = result{out.String(), errb.String(), ee.ExitCode()}
			} else if err != nil {
				rs[i] = result{"", err.Error(), -1}
			} else {
				rs[i] = result{out.String(), errb.String(), 0}
			}
		}()
	}
	wg.Wait()
	oneWins(t, rs[0], rs[1], "container twice is already")
	if n := c.countEvents("twice", events.TypeTaskStarted); n != 1 {
		t.Fatalf("%d task-started recorded for two starts at once, want 1:\n%s", n, c.mustCtl("events", "--container", "twice", "--no-follow"))
	}

	// With the executor held, a start, a label update and a second start
	// are all recorded: the second start is the executor's to refuse.
	c.mustCtl("create", "--name", "late", img, "sleep", "100")
	executor := c.procs["executor"].cmd.Process
	if err := executor.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = executor.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	first := c.startCtl("start", "late")
	eventually(t, 30*time.Second, func() bool { return c.countEvents("late", events.TypeTaskStartRequested) == 1 }, "the first start to be recorded")
	if r := c.startCtl("start", "late").wait(t); r.code == 0 || !strings.Contains(r.stderr, "container late is already starting") {
		t.Fatalf("start while another is pending: exit %d, stderr %q; want it refused as already starting", r.code, r.stderr)
	}
	c.mustCtl("containers", "label", "late", "k=v")
	second := c.startCtl("start", "late")
	eventually(t, 30*time.Second, func() bool { return c.countEvents("late", events.TypeTaskStartRequested) == 2 }, "the second start to be recorded")
	resume()
	oneWins(t, first.wait(t), second.wait(t), "container late is already running")
	evs := c.containerEvents("late")
	var started, failed int
	for _, ev := range evs {
		switch ev.Type {
		case events.TypeTaskStarted:
			started++
		case events.TypeTaskStartFailed:
			failed++
		}
	}
	if started != 1 || failed != 1 {
		t.Fatalf("%d task-started and %d task-start-failed for two recorded starts, want 1 and 1:\n%s",
			started, failed, c.mustCtl("events", "--container", "late", "--no-follow"))
	}

	c.mustCtl("rm", "--force", "twice", "late")
	c.assertNothingLeft("twice", "late")
}
