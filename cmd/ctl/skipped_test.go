package main

import (
	"context"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/events"
)

// TestEventsAndHistoryTellOfSkippedEvents checks that ctl warns on stderr
// of each event it cannot read, and says a history's events could not be
// read rather than that there are none.
func TestEventsAndHistoryTellOfSkippedEvents(t *testing.T) {
	l := newEventLog(t, false)
	l.story()
	subj := events.Subject("default", events.KindContainer, "ghost", events.TypeContainerCreated, "node-1")
	ack, err := l.s.JS.Publish(context.Background(), subj,
		[]byte(`{"id":"g1","type":"container-created","v":99,"ns":"default","op":"opG","aggregate":{"kind":"container","id":"ghost"},"payload":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 12 {
		t.Fatalf("the newer event is #%d, want #12", ack.Sequence)
	}
	warning := "ctl: skipped event #12 (container-created): schema v99 is newer than this ctl understands (upgrade ctl)\n"

	out, errOut, err := invocation{}.ctl(t, l.s.URL(), "events", "--from-seq", "12", "--no-follow")
	if err != nil || out != "" || errOut != warning {
		t.Errorf("events --from-seq 12: err %v, stdout %q, stderr %q; want the warning %q", err, out, errOut, warning)
	}

	out, errOut, err = invocation{}.ctl(t, l.s.URL(), "history", "container", "ghost")
	want := "history of container ghost: failed precondition: 1 event could not be read"
	if err == nil || !strings.Contains(err.Error(), want) || out != "" || errOut != warning {
		t.Errorf("history container ghost: err %v, stdout %q, stderr %q; want %q and the warning", err, out, errOut, want)
	}
}

// TestEventsRejectsUnknownTypes checks that --type takes only types of the
// catalogue, and that an invalid filter's error says "events: " once.
func TestEventsRejectsUnknownTypes(t *testing.T) {
	l := newEventLog(t, false)
	l.story()
	_, _, err := invocation{}.ctl(t, l.s.URL(), "events", "--no-follow", "--type", "nonsense")
	if err == nil || !strings.Contains(err.Error(), `unknown event type "nonsense": want one of pull-requested, `) ||
		!strings.Contains(err.Error(), "container-labels-updated") {
		t.Errorf("--type nonsense: %v", err)
	}
	_, _, err = invocation{}.ctl(t, l.s.URL(), "events", "--no-follow", "--container", "a/b")
	if err == nil || !strings.HasPrefix(err.Error(), "events: invalid argument: container id") {
		t.Errorf("--container a/b: %v, want it to start with %q", err, "events: invalid argument: container id")
	}
	out, _, err := invocation{}.ctl(t, l.s.URL(), "events", "--no-follow", "--from-seq", "1", "--type", "task-exited")
	if err != nil || len(seqsOf(t, out)) != 1 {
		t.Errorf("--type task-exited: %v\n%s", err, out)
	}
}
