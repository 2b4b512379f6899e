package client_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stevedore/stevedore/internal/testutil/gatewaytest"
	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// publishRaw appends data as it is on subject, as a newer build (or
// something that is not Stevedore) could.
func publishRaw(t *testing.T, s *natstest.Server, subject, data string) uint64 {
	t.Helper()
	ack, err := s.JS.Publish(context.Background(), subject, []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// warnings collects what a client's Warn function is told.
type warnings struct {
	mu   sync.Mutex
	seen []client.SkippedEvent
}

func (w *warnings) warn(s client.SkippedEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, s)
}

// take returns the skipped events seen so far and forgets them.
func (w *warnings) take() []client.SkippedEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.seen
	w.seen = nil
	return out
}

func skippedSeqs(sk []client.SkippedEvent) []uint64 {
	var out []uint64
	for _, s := range sk {
		out = append(out, s.Seq)
	}
	return out
}

// TestReadsWarnOfSkippedEvents checks that a read of the log tells the
// client's Warn function of each event it skips, in its place: one of a
// newer schema version (with its type and version) and a message that is
// not an event; and that it warns only of those the read's filters keep.
func TestReadsWarnOfSkippedEvents(t *testing.T) {
	s := natstest.Start(t)
	a := newAppender(t, s)
	web := events.ContainerAggregate("web")
	first := a.at(0, "default", "opC1", "bob", "node-1", events.TypeContainerCreateRequested, web,
		events.ContainerCreateRequested{ID: "web", Image: storyImage, Node: "node-1"})
	newer := publishRaw(t, s, events.Subject("default", events.KindContainer, "web", events.TypeTaskExited, "node-1"),
		`{"id":"n1","type":"task-exited","v":99,"ns":"default","op":"opC1","actor":"bob","node":"node-1","aggregate":{"kind":"container","id":"web"},"payload":{"id":"web","exit":{"code":0}}}`)
	junk := publishRaw(t, s, events.Subject("default", events.KindContainer, "web", events.TypeTaskExited, "node-1"), `not an event`)
	other := publishRaw(t, s, events.Subject("default", events.KindContainer, "web", events.TypeTaskExited, "node-1"),
		`{"id":"n2","type":"task-exited","v":99,"ns":"default","op":"opOther","actor":"eve","aggregate":{"kind":"container","id":"web"},"payload":{}}`)
	last := a.at(time.Second, "default", "opC1", "bob", "node-1", events.TypeContainerCreated, web,
		events.ContainerCreated{ID: "web", Image: storyImage, Node: "node-1"})

	var w warnings
	c := newClient(t, s, client.WithWarn(w.warn))
	if got := readAll(t, c, client.EventsOptions{FromSeq: 1}); !slices.Equal(got, []uint64{first, last}) {
		t.Fatalf("events read: %v, want %v", got, []uint64{first, last})
	}
	sk := w.take()
	if got := skippedSeqs(sk); !slices.Equal(got, []uint64{newer, junk, other}) {
		t.Fatalf("warned of %v, want %v", got, []uint64{newer, junk, other})
	}
	if !sk[0].Newer() || sk[0].Event == nil || sk[0].Event.Version != 99 || sk[0].Event.Type != events.TypeTaskExited || sk[0].Event.Operation != "opC1" {
		t.Errorf("newer event: %+v (event %+v)", sk[0], sk[0].Event)
	}
	if want := "task-exited schema v99 is newer than this build reads (v1): upgrade it"; sk[0].Reason() != want {
		t.Errorf("newer event's reason %q, want %q", sk[0].Reason(), want)
	}
	if sk[1].Newer() || sk[1].Event != nil || !strings.Contains(sk[1].String(), "not an event envelope") ||
		!strings.HasPrefix(sk[1].String(), "skipped event #3 on sd.evt.default.container.web.task-exited.node-1: ") {
		t.Errorf("junk: %q (%+v)", sk[1].String(), sk[1])
	}

	// Filtered by operation: the newer event of another operation is not
	// this read's; the junk may be.
	readAll(t, c, client.EventsOptions{FromSeq: 1, Operation: "opC1"})
	if got := skippedSeqs(w.take()); !slices.Equal(got, []uint64{newer, junk}) {
		t.Errorf("operation opC1: warned of %v, want %v", got, []uint64{newer, junk})
	}

	// A client derived with With warns; the one it came from is unchanged.
	quiet := newClient(t, s)
	loud, err := quiet.With(client.WithWarn(w.warn))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, quiet, client.EventsOptions{FromSeq: 1})
	if got := w.take(); len(got) != 0 {
		t.Errorf("a client without Warn warned: %v", got)
	}
	readAll(t, loud, client.EventsOptions{FromSeq: 1})
	if got := skippedSeqs(w.take()); len(got) != 3 {
		t.Errorf("the derived client warned of %v, want 3", got)
	}
	if loud.Namespace() != quiet.Namespace() || loud.Actor() != quiet.Actor() {
		t.Errorf("With changed the namespace or actor: %s %s", loud.Namespace(), loud.Actor())
	}
}

// TestHistoryOfUnreadableEvents checks that a history whose only events
// cannot be read says so (and how many), rather than that the log has no
// events, and warns of each.
func TestHistoryOfUnreadableEvents(t *testing.T) {
	s := natstest.Start(t)
	tell(newAppender(t, s))
	newer := publishRaw(t, s, events.Subject("default", events.KindContainer, "ghost", events.TypeContainerCreated, "node-1"),
		`{"id":"g1","type":"container-created","v":99,"ns":"default","op":"opG","aggregate":{"kind":"container","id":"ghost"},"payload":{}}`)
	junk := publishRaw(t, s, events.Subject("default", events.KindContainer, "junk", events.TypeContainerCreated, "node-1"), `{"broken`)
	var w warnings
	c := newClient(t, s, client.WithWarn(w.warn))

	_, err := c.History(ctxT(t), client.HistoryContainer, "ghost")
	want := "history of container ghost: failed precondition: 1 event could not be read: of a newer schema version than this client reads (upgrade it)"
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || err.Error() != want {
		t.Errorf("history of a container with only a newer event: %v, want %q", err, want)
	}
	if got := skippedSeqs(w.take()); !slices.Equal(got, []uint64{newer}) {
		t.Errorf("warned of %v, want [%d]", got, newer)
	}

	_, err = c.History(ctxT(t), client.HistoryContainer, "junk")
	want = "history of container junk: data loss: 1 event could not be read"
	if !errors.Is(err, errdefs.ErrDataLoss) || err.Error() != want {
		t.Errorf("history of a container with only a junk message: %v, want %q", err, want)
	}
	if got := skippedSeqs(w.take()); !slices.Equal(got, []uint64{junk}) {
		t.Errorf("warned of %v, want [%d]", got, junk)
	}

	// By operation (the whole log, no gateway): the newer event is the
	// operation's; the junk might be anyone's.
	_, err = c.History(ctxT(t), client.HistoryOp, "opG")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "1 event could not be read") {
		t.Errorf("history of an operation with only a newer event: %v", err)
	}
	if got := skippedSeqs(w.take()); !slices.Equal(got, []uint64{newer, junk}) {
		t.Errorf("warned of %v, want [%d %d]", got, newer, junk)
	}
	_, err = c.History(ctxT(t), client.HistoryOp, "nope")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "1 message that could not be read may belong to it") {
		t.Errorf("history of an unknown operation in a log with junk: %v", err)
	}
	w.take()

	// A history with readable events is returned; the unreadable ones
	// among them are warned of.
	ctr, err := c.History(ctxT(t), client.HistoryContainer, "web")
	if err != nil || len(ctr) != 5 {
		t.Fatalf("history of web: %d entries, %v", len(ctr), err)
	}
	if got := w.take(); len(got) != 0 {
		t.Errorf("history of web warned of %v", skippedSeqs(got))
	}
}

// TestHistoryOfAContainerRemovalHasItsSnapshot checks that the history of
// a container removal holds the removal of the container's rootfs
// snapshot, which the node's unpacker records on the snapshot's subject in
// the removal's operation.
func TestHistoryOfAContainerRemovalHasItsSnapshot(t *testing.T) {
	s := natstest.Start(t)
	gatewaytest.Start(t, s)
	c := newClient(t, s)
	pub := sdjs.NewPublisher(s.JS)
	publish := func(node string, typ events.Type, agg events.Aggregate, payload any) uint64 {
		t.Helper()
		ev, err := events.New(events.Meta{Namespace: "default", Operation: "opRm", Actor: "bob", Node: node}, typ, agg, payload)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := pub.Publish(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	web := events.ContainerAggregate("web")
	asked := publish("node-1", events.TypeContainerDeleteRequested, web, events.ContainerDeleteRequested{ID: "web", Node: "node-1"})
	// Another container's snapshot, in another operation.
	ev, _ := events.New(events.Meta{Namespace: "default", Operation: "opOther", Node: "node-1"}, events.TypeSnapshotRemoved,
		events.SnapshotAggregate("other"), events.SnapshotRemoved{Key: "other", Snapshotter: "overlay"})
	if _, err := pub.Publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	removed := publish("node-1", events.TypeSnapshotRemoved, events.SnapshotAggregate("web"), events.SnapshotRemoved{Key: "web", Snapshotter: "overlay"})
	deleted := publish("node-1", events.TypeContainerDeleted, web, events.ContainerDeleted{ID: "web"})
	natstest.Eventually(t, 5*time.Second, func() bool {
		op, err := c.Operation(ctxT(t), "opRm")
		return err == nil && op.State == api.OpCompleted
	}, "the view did not record the removal")

	h, err := c.History(ctxT(t), client.HistoryOp, "opRm")
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, e := range h {
		got = append(got, e.Seq)
	}
	if want := []uint64{asked, removed, deleted}; !slices.Equal(got, want) {
		t.Fatalf("history of the removal: %v, want %v", got, want)
	}
}
