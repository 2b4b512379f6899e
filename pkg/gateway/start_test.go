package gateway

import (
	"strings"
	"sync"
	"testing"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/events"
)

// startsAtOnce sends n starts of container id at once and returns how many
// were accepted and the descriptions of the refused ones; any other
// outcome fails the test.
func startsAtOnce(t *testing.T, h *harness, id string, n int) (accepted int, refused []string) {
	t.Helper()
	var wg sync.WaitGroup
	codes, descs, errs := make([]string, n), make([]string, n), make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], descs[i], errs[i] = rawCall(h.nc, api.SubjectContainersStart, api.ContainerStartRequest{ID: id})
		}()
	}
	wg.Wait()
	for i := range n {
		switch {
		case errs[i] != nil:
			t.Fatalf("start %d: %v", i, errs[i])
		case codes[i] == "":
			accepted++
		case codes[i] == "failed_precondition":
			refused = append(refused, descs[i])
		default:
			t.Fatalf("start %d: code %q (%s)", i, codes[i], descs[i])
		}
	}
	return accepted, refused
}

// countType counts the events of type typ in the log.
func countType(h *harness, typ events.Type) int {
	n := 0
	for seq := uint64(1); seq <= h.lastSeq(); seq++ {
		if h.event(seq).Type == typ {
			n++
		}
	}
	return n
}

// TestContainersStartPending checks that a start request not yet answered
// by the executor makes further starts fail: of starts at once exactly one
// is recorded, and a start is accepted again once the pending one is
// answered, whether it failed or the task ran and exited.
func TestContainersStartPending(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.imageReady("default", busybox)
	rep, _, _ := h.create(api.ContainerCreateRequest{ID: "c1", Image: "busybox"})
	h.created("default", rep.Operation, "c1", "node1", nil)
	agg := events.ContainerAggregate("c1")

	// No executor answers: the first start stays pending.
	const n = 6
	accepted, refused := startsAtOnce(t, h, "c1", n)
	if accepted != 1 || len(refused) != n-1 {
		t.Fatalf("%d of %d starts at once accepted, want 1", accepted, n)
	}
	for _, desc := range refused {
		if !strings.Contains(desc, "container c1 is already starting") {
			t.Fatalf("refused start: %q, want it to say the container is already starting", desc)
		}
	}
	if got := countType(h, events.TypeTaskStartRequested); got != 1 {
		t.Fatalf("%d task-start-requested recorded, want 1", got)
	}
	// A later start is refused as well while the first is pending.
	if desc := h.wantErr(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"}, "failed_precondition"); !strings.Contains(desc, "already starting") {
		t.Fatalf("start while pending: %q", desc)
	}

	// The executor answers with task-start-failed: a start may be asked again.
	pending := h.event(h.lastSeq())
	h.publish("default", pending.Operation, events.TypeTaskStartFailed, agg,
		events.Failure{ID: "c1", Code: "internal", Message: "runc failed"})
	accepted, _ = startsAtOnce(t, h, "c1", n)
	if accepted != 1 {
		t.Fatalf("after task-start-failed: %d of %d starts accepted, want 1", accepted, n)
	}

	// The task runs: starts are refused as running; once it exited the
	// gateway accepts a start again (the executor decides whether the
	// container can run again).
	pending = h.event(h.lastSeq())
	if pending.Type != events.TypeTaskStartRequested {
		t.Fatalf("last event %s, want task-start-requested", pending.Type)
	}
	h.publish("default", pending.Operation, events.TypeTaskStarted, agg, events.TaskStarted{ID: "c1", Pid: 42})
	if desc := h.wantErr(api.SubjectContainersStart, api.ContainerStartRequest{ID: "c1"}, "failed_precondition"); !strings.Contains(desc, "already running") {
		t.Fatalf("start of a running task: %q", desc)
	}
	h.publish("default", pending.Operation, events.TypeTaskExited, agg, events.TaskExited{ID: "c1", Code: 0})
	accepted, _ = startsAtOnce(t, h, "c1", n)
	if accepted != 1 {
		t.Fatalf("after task-exited: %d of %d starts accepted, want 1", accepted, n)
	}
	if got := countType(h, events.TypeTaskStartRequested); got != 3 {
		t.Fatalf("%d task-start-requested recorded, want 3", got)
	}
}
