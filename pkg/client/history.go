package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// History kinds: what History tells the story of.
const (
	// HistoryImage is one image name: its image events, and the pulls that
	// asked for it with every event of theirs (blobs, layers, …).
	HistoryImage = "image"
	// HistoryContainer is one container: its container and task events.
	HistoryContainer = "container"
	// HistoryOp is one operation: every event it caused, in any namespace.
	HistoryOp = "op"
)

// opClockSlack is how far before an operation's recorded start History
// looks for its events: the start is the gateway's clock, the log is
// positioned by the NATS server's.
const opClockSlack = time.Minute

// containerOpKinds are the operation kinds of container and task requests
// (the view's OpKindContainer* values): their events are all on the
// container named by the operation's Ref.
var containerOpKinds = []string{"create", "run", "start", "kill", "delete", "label"}

// HistoryEntry is one event of a history, with how long it came after the
// previous entry and after the first.
type HistoryEntry struct {
	Seq   uint64           `json:"seq"`
	Event *events.Envelope `json:"event"`
	// Step is the time from the previous entry's event to this one; Elapsed
	// from the first entry's. Times are the events' own (each worker's clock).
	Step    time.Duration `json:"step_ns"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Outcome is api.OpCompleted or api.OpFailed when this event ends its
	// operation, with the failure's Code and Message.
	Outcome string `json:"outcome,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// OpOutcome sums up one operation of a history.
type OpOutcome struct {
	Operation string `json:"op"`
	// Actor is who asked; Request is the type of the operation's first
	// event in the history (e.g. pull-requested).
	Actor   string      `json:"actor,omitempty"`
	Request events.Type `json:"request"`
	// State is api.OpCompleted, api.OpFailed, or api.OpRunning when the
	// history holds no end for it.
	State   string `json:"state"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Started is the first event's time, Ended the ending event's (zero
	// while running); Duration is between them.
	Started  time.Time     `json:"started"`
	Ended    time.Time     `json:"ended,omitzero"`
	Duration time.Duration `json:"duration_ns"`
	Events   int           `json:"events"`
	// Nodes are the nodes whose workers recorded its events, in order of
	// first appearance.
	Nodes []string `json:"nodes,omitempty"`
}

// History returns the story of one image, container or operation (kind is
// HistoryImage, HistoryContainer or HistoryOp), as recorded in the log up
// to now, in log order: who asked (each event's actor), what each worker did
// (its node and event), how long each step took and how each operation
// ended. Images and containers are looked up in the client's namespace;
// an image name is matched as given and as Docker qualifies it.
//
// An unknown kind or a malformed id is an error wrapping
// errdefs.ErrInvalidArgument; an aggregate or operation with no events in
// the log, one wrapping errdefs.ErrNotFound.
func (c *Client) History(ctx context.Context, kind, id string) ([]HistoryEntry, error) {
	var (
		evs []*events.Envelope
		err error
		sk  skipCount
	)
	switch kind {
	case HistoryImage:
		evs, err = c.imageHistory(ctx, id, &sk)
	case HistoryContainer:
		evs, err = c.containerHistory(ctx, id, &sk)
	case HistoryOp:
		evs, err = c.opHistory(ctx, id, &sk)
	default:
		return nil, fmt.Errorf("history: %w: unknown kind %q: want %s, %s or %s", errdefs.ErrInvalidArgument, kind, HistoryImage, HistoryContainer, HistoryOp)
	}
	if err != nil {
		return nil, fmt.Errorf("history of %s %s: %w", kind, id, err)
	}
	if len(evs) == 0 {
		return nil, sk.noEvents(kind, id)
	}
	return historyEntries(evs), nil
}

// skipCount counts the messages a history's reads skipped: matched are
// events of the history that could not be read (the read's subjects or
// its operation say they belong to it); unsure, messages that are not
// envelopes, found where the history's events are looked for among
// others'; newer, the matched events of a newer schema version.
type skipCount struct{ matched, unsure, newer int }

// noEvents is History's error when it found no event it could read.
func (sk skipCount) noEvents(kind, id string) error {
	switch {
	case sk.matched > 0 && sk.newer == sk.matched:
		return fmt.Errorf("history of %s %s: %w: %s could not be read: of a newer schema version than this client reads (upgrade it)",
			kind, id, errdefs.ErrFailedPrecondition, countEvents(sk.matched))
	case sk.matched > 0 && sk.newer > 0:
		return fmt.Errorf("history of %s %s: %w: %s could not be read (%d of a newer schema version than this client reads: upgrade it)",
			kind, id, errdefs.ErrDataLoss, countEvents(sk.matched), sk.newer)
	case sk.matched > 0:
		return fmt.Errorf("history of %s %s: %w: %s could not be read", kind, id, errdefs.ErrDataLoss, countEvents(sk.matched))
	case sk.unsure > 0:
		return fmt.Errorf("history of %s %s: %w: no events in the log that could be read (%s that could not be read may belong to it)",
			kind, id, errdefs.ErrNotFound, countMessages(sk.unsure))
	}
	return fmt.Errorf("history of %s %s: %w: no events in the log", kind, id, errdefs.ErrNotFound)
}

func countEvents(n int) string {
	if n == 1 {
		return "1 event"
	}
	return fmt.Sprintf("%d events", n)
}

func countMessages(n int) string {
	if n == 1 {
		return "1 message"
	}
	return fmt.Sprintf("%d messages", n)
}

// collect reads r to its end and returns the events keep accepts. The
// messages it skips that keep accepts (as far as they can be read) are
// counted in sk and passed to the client's Warn function.
func (c *Client) collect(ctx context.Context, r logRead, keep func(*events.Envelope) bool, sk *skipCount) ([]*events.Envelope, error) {
	r.follow = false
	var out []*events.Envelope
	err := c.readLog(ctx, r, func(ev *events.Envelope) error {
		if keep == nil || keep(ev) {
			out = append(out, ev)
		}
		return nil
	}, func(s SkippedEvent) {
		switch {
		case s.Event != nil && keep != nil && !keep(s.Event):
			return // another's event
		case s.Event == nil && keep != nil:
			sk.unsure++
		default:
			sk.matched++
			if s.Newer() {
				sk.newer++
			}
		}
		if c.warn != nil {
			c.warn(s)
		}
	})
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return out, err
}

func (c *Client) imageHistory(ctx context.Context, ref string, sk *skipCount) ([]*events.Envelope, error) {
	if ref == "" || strings.ContainsAny(ref, " \t\r\n") {
		return nil, fmt.Errorf("%w: image reference %q is empty or contains white space", errdefs.ErrInvalidArgument, ref)
	}
	names := imageNames(ref)
	// First the image's own events and every pull request (small events,
	// filtered by the server), to learn which pulls asked for the image.
	var filters []string
	for _, n := range names {
		filters = append(filters, events.FilterSubject(c.ns, events.KindImage, events.EncodeToken(n), ""))
	}
	filters = append(filters, events.FilterSubject(c.ns, events.KindPull, "", events.TypePullRequested))
	ops := map[string]bool{}
	var firstPull uint64
	evs, err := c.collect(ctx, logRead{filters: filters}, func(ev *events.Envelope) bool {
		if ev.Type != events.TypePullRequested || ev.Aggregate.Kind != events.KindPull {
			return true
		}
		var p events.PullRequested
		if ev.Decode(&p) != nil || !slices.Contains(names, p.Ref) || ev.Operation == "" {
			return false
		}
		ops[ev.Operation] = true
		if firstPull == 0 {
			firstPull = ev.Seq
		}
		return true
	}, sk)
	if err != nil || firstPull == 0 {
		return evs, err
	}
	// Then everything those pulls caused, from the first of them on.
	seen := map[uint64]bool{}
	for _, ev := range evs {
		seen[ev.Seq] = true
	}
	more, err := c.collect(ctx, logRead{filters: []string{events.FilterSubject(c.ns, "", "", "")}, startSeq: firstPull + 1},
		func(ev *events.Envelope) bool { return ops[ev.Operation] && !seen[ev.Seq] }, sk)
	if err != nil {
		return nil, err
	}
	evs = append(evs, more...)
	slices.SortFunc(evs, func(a, b *events.Envelope) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return evs, nil
}

func (c *Client) containerHistory(ctx context.Context, id string, sk *skipCount) ([]*events.Envelope, error) {
	if err := ValidateContainerID(id); err != nil {
		return nil, err
	}
	return c.collect(ctx, logRead{filters: []string{containerFilter(c.ns, id)}}, nil, sk)
}

func (c *Client) opHistory(ctx context.Context, id string, sk *skipCount) ([]*events.Envelope, error) {
	if err := checkToken("operation id", id); err != nil {
		return nil, err
	}
	r := logRead{} // the whole log, every namespace
	op, err := c.Operation(ctx, id)
	switch {
	case err == nil:
		// The view knows when it started (and, for a container request,
		// which container it is about): read from a little before that.
		if !op.StartedAt.IsZero() {
			start := op.StartedAt.Add(-opClockSlack)
			r.startTime = &start
		}
		if slices.Contains(containerOpKinds, op.Kind) && ValidateContainerID(op.Ref) == nil {
			// The container's events, and the removal of its rootfs
			// snapshot (recorded by its node's unpacker, in the operation
			// that removed the container).
			r.filters = []string{
				events.FilterSubject("", events.KindContainer, op.Ref, ""),
				events.FilterSubject("", events.KindSnapshot, "", events.TypeSnapshotRemoved),
			}
		}
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrUnavailable):
		// No record of it (or no gateway to ask): read the whole log.
	default:
		return nil, err
	}
	return c.collect(ctx, r, func(ev *events.Envelope) bool { return ev.Operation == id }, sk)
}

// historyEntries times evs and marks the events that end an operation.
func historyEntries(evs []*events.Envelope) []HistoryEntry {
	out := make([]HistoryEntry, len(evs))
	runs := map[string]bool{} // operations that create and start a container
	for i, ev := range evs {
		e := HistoryEntry{Seq: ev.Seq, Event: ev}
		if i > 0 {
			e.Step = ev.Time.Sub(evs[i-1].Time)
			e.Elapsed = ev.Time.Sub(evs[0].Time)
		}
		if ev.Type == events.TypeContainerCreateRequested {
			var p events.ContainerCreateRequested
			if ev.Decode(&p) == nil && p.Start {
				runs[ev.Operation] = true
			}
		}
		e.Outcome, e.Code, e.Message = outcome(ev, runs[ev.Operation])
		out[i] = e
	}
	return out
}

// outcome says whether ev ends its operation and how; run is whether the
// operation is a container create that also starts its task (it ends with
// the start, not the create).
func outcome(ev *events.Envelope, run bool) (state, code, msg string) {
	switch ev.Type {
	case events.TypePullCompleted, events.TypeBlobDeleted, events.TypeImageDeleted, events.TypeContainerDeleted,
		events.TypeTaskStarted, events.TypeTaskKillRequested, events.TypeContainerLabelsUpdated:
		return api.OpCompleted, "", ""
	case events.TypeContainerCreated:
		if run {
			return "", "", ""
		}
		return api.OpCompleted, "", ""
	case events.TypePullFailed:
		var p events.PullFailed
		_ = ev.Decode(&p)
		return api.OpFailed, p.Code, p.Message
	case events.TypeContentDeleteFailed:
		var p events.ContentDeleteFailed
		_ = ev.Decode(&p)
		return api.OpFailed, p.Code, p.Message
	case events.TypeContainerCreateFailed, events.TypeTaskStartFailed, events.TypeContainerDeleteFailed:
		var p events.Failure
		_ = ev.Decode(&p)
		return api.OpFailed, p.Code, p.Message
	case events.TypeContainerCreateRefused:
		var p events.ContainerCreateRefused
		_ = ev.Decode(&p)
		return api.OpFailed, p.Code, p.Message
	}
	return "", "", ""
}

// Outcomes sums up the operations of a history, in order of their first
// event. Events without an operation are not counted. The first end of an
// operation decides its state.
func Outcomes(entries []HistoryEntry) []OpOutcome {
	var out []OpOutcome
	idx := map[string]int{}
	for _, e := range entries {
		ev := e.Event
		if ev == nil || ev.Operation == "" {
			continue
		}
		i, ok := idx[ev.Operation]
		if !ok {
			i = len(out)
			idx[ev.Operation] = i
			out = append(out, OpOutcome{Operation: ev.Operation, Actor: ev.Actor, Request: ev.Type, State: api.OpRunning, Started: ev.Time})
		}
		o := &out[i]
		o.Events++
		if ev.Node != "" && !slices.Contains(o.Nodes, ev.Node) {
			o.Nodes = append(o.Nodes, ev.Node)
		}
		if o.State == api.OpRunning {
			o.Duration = ev.Time.Sub(o.Started)
			if e.Outcome != "" {
				o.State, o.Code, o.Message, o.Ended = e.Outcome, e.Code, e.Message, ev.Time
			}
		}
	}
	return out
}
