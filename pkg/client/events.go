package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// EventsOptions select events of the log and say where reading starts.
//
// Filters of different kinds combine with "and"; values of one kind, and the
// aggregate filters (Images, Containers, Blobs, Pulls) among themselves,
// combine with "or". The namespace, types and aggregates are compiled into
// subject filters, so the server sends only what matches; Operation and
// Actor are matched against each envelope.
type EventsOptions struct {
	// Namespace is read (empty: the client's), or every namespace with
	// AllNamespaces.
	Namespace     string
	AllNamespaces bool
	// Types keeps only events of these types.
	Types []events.Type
	// Images keeps the events of these image names' aggregates. A name is
	// matched as given and as Docker qualifies it ("alpine" is also
	// "docker.io/library/alpine:latest"), as the gateway names images.
	Images []string
	// Containers keeps the events of these containers.
	Containers []string
	// Blobs keeps the events of these blobs.
	Blobs []digest.Digest
	// Pulls keeps the events of these pull operations' aggregates
	// (pull-requested, pull-completed, pull-failed); Operation keeps all of
	// an operation's events, whatever their aggregate.
	Pulls []string
	// Operation keeps only events of this operation id.
	Operation string
	// Actor keeps only events caused by this actor.
	Actor string
	// FromSeq starts at this log sequence (1: the beginning). Since starts
	// at the first event recorded at or after this time. At most one may be
	// set. With neither, reading starts at the end of the log (only new
	// events) or, with NoFollow, at its beginning.
	FromSeq uint64
	Since   time.Time
	// NoFollow stops at the end of the log as it was when reading started,
	// instead of following new events.
	NoFollow bool
}

// Events reads the selected events from the log, in log order, and calls fn
// with each (its Seq set). Replaying (FromSeq, Since) and following new
// events are one ordered read: no event is missed or seen twice between
// them. Events returns nil when ctx ends or, with NoFollow, at the end of
// the log; if fn returns an error Events stops and returns it. Invalid
// options give an error wrapping errdefs.ErrInvalidArgument, an unreadable
// log one wrapping errdefs.ErrUnavailable.
func (c *Client) Events(ctx context.Context, opts EventsOptions, fn func(*events.Envelope) error) error {
	filters, err := c.eventFilters(opts)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if opts.FromSeq != 0 && !opts.Since.IsZero() {
		return fmt.Errorf("events: %w: give a start sequence or a start time, not both", errdefs.ErrInvalidArgument)
	}
	if opts.Operation != "" {
		if err := checkToken("operation id", opts.Operation); err != nil {
			return fmt.Errorf("events: %w", err)
		}
	}
	r := logRead{filters: filters, startSeq: opts.FromSeq, follow: !opts.NoFollow}
	if !opts.Since.IsZero() {
		since := opts.Since
		r.startTime = &since
	}
	if r.startSeq == 0 && r.startTime == nil && r.follow {
		last, err := sdjs.LastSeq(ctx, c.js)
		if err != nil {
			return fmt.Errorf("events: %w: %w", errdefs.ErrUnavailable, err)
		}
		r.startSeq = last + 1
	}
	keep := func(ev *events.Envelope) bool {
		return (opts.Operation == "" || ev.Operation == opts.Operation) && (opts.Actor == "" || ev.Actor == opts.Actor)
	}
	var fnErr error
	err = c.readLog(ctx, r, func(ev *events.Envelope) error {
		if !keep(ev) {
			return nil
		}
		fnErr = fn(ev)
		return fnErr
	}, func(sk SkippedEvent) {
		// One that can be read far enough to tell is only worth a warning
		// if the filters would have kept it.
		if c.warn != nil && (sk.Event == nil || keep(sk.Event)) {
			c.warn(sk)
		}
	})
	if err != nil && err != fnErr {
		return fmt.Errorf("events: %w", err)
	}
	return err
}

// eventFilters compiles the namespace, type and aggregate options into
// subject filters that do not overlap.
func (c *Client) eventFilters(o EventsOptions) ([]string, error) {
	ns := o.Namespace
	switch {
	case o.AllNamespaces && ns != "":
		return nil, fmt.Errorf("%w: give a namespace or all namespaces, not both", errdefs.ErrInvalidArgument)
	case o.AllNamespaces:
		ns = "" // any
	case ns == "":
		ns = c.ns
	}
	if ns != "" {
		if err := events.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	type agg struct{ kind, id string }
	var aggs []agg
	for _, ref := range o.Images {
		if ref == "" || strings.ContainsAny(ref, " \t\r\n") {
			return nil, fmt.Errorf("%w: image reference %q is empty or contains white space", errdefs.ErrInvalidArgument, ref)
		}
		for _, name := range imageNames(ref) {
			aggs = append(aggs, agg{events.KindImage, events.EncodeToken(name)})
		}
	}
	for _, id := range o.Containers {
		if err := ValidateContainerID(id); err != nil {
			return nil, err
		}
		aggs = append(aggs, agg{events.KindContainer, id})
	}
	for _, d := range o.Blobs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("%w: blob digest %q: %w", errdefs.ErrInvalidArgument, d, err)
		}
		aggs = append(aggs, agg{events.KindBlob, d.Encoded()})
	}
	for _, op := range o.Pulls {
		if err := checkToken("pull operation id", op); err != nil {
			return nil, err
		}
		aggs = append(aggs, agg{events.KindPull, op})
	}
	if len(aggs) == 0 {
		aggs = []agg{{}}
	}
	types := []events.Type{""}
	if len(o.Types) > 0 {
		types = o.Types
		for _, t := range types {
			if !events.KnownType(t) {
				return nil, fmt.Errorf("%w: unknown event type %q: want one of %s", errdefs.ErrInvalidArgument, t, typeList())
			}
		}
	}
	var filters []string
	for _, a := range aggs {
		for _, t := range types {
			f := events.FilterSubject(ns, a.kind, a.id, t)
			if !slices.Contains(filters, f) {
				filters = append(filters, f)
			}
		}
	}
	return filters, nil
}

// typeList names every event type, for an error about an unknown one.
func typeList() string {
	var b strings.Builder
	for i, t := range events.Types() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(t))
	}
	return b.String()
}

// imageNames returns the names an image reference may have in the log: as
// given, and as Docker qualifies it.
func imageNames(ref string) []string {
	if full := dockerName(ref); full != ref {
		return []string{ref, full}
	}
	return []string{ref}
}

// checkToken accepts a value that is one subject token.
func checkToken(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", errdefs.ErrInvalidArgument, what)
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return fmt.Errorf("%w: %s %q has a character it cannot have (one of . * > or a space)", errdefs.ErrInvalidArgument, what, s)
	}
	return nil
}

// logRead is one ordered read of the log.
type logRead struct {
	filters   []string // empty: every event
	startSeq  uint64
	startTime *time.Time
	// follow keeps reading new events; otherwise the read ends at the last
	// event, among those the filters match, that was in the log when it
	// started.
	follow bool
}

// errEndOfLog ends a read that does not follow, from inside Follow.
var errEndOfLog = errors.New("end of the log")

// readLog reads the log as r says and calls fn with each event, in order.
// A message it cannot use (not an event, or an event of a newer schema
// version) is skipped: skipped, if not nil, is told of it in its place in
// the log. It returns nil when ctx ends or a read that does not follow
// reached its end, fn's error if it returns one.
func (c *Client) readLog(ctx context.Context, r logRead, fn func(*events.Envelope) error, skipped func(SkippedEvent)) error {
	var end uint64
	if !r.follow {
		var err error
		if end, err = c.lastMatching(ctx, r.filters, r.startTime); err != nil {
			return err
		}
		if end == 0 || end < r.startSeq {
			return nil // nothing to read
		}
	}
	stop := func(seq uint64) error {
		if !r.follow && seq >= end {
			return errEndOfLog
		}
		return nil
	}
	cfg := sdjs.FollowConfig{
		Filters:   r.filters,
		StartSeq:  r.startSeq,
		StartTime: r.startTime,
		Undecodable: func(seq uint64, subject string, err error) error {
			if skipped != nil {
				skipped(c.skippedEvent(ctx, seq, subject, err))
			}
			return stop(seq)
		},
	}
	var fnErr error
	err := sdjs.Follow(ctx, c.js, cfg, func(ev *events.Envelope) error {
		if !r.follow && ev.Seq > end {
			return errEndOfLog
		}
		if err := fn(ev); err != nil {
			fnErr = err
			return err
		}
		return stop(ev.Seq)
	})
	switch {
	case fnErr != nil:
		return fnErr
	case err == nil || errors.Is(err, errEndOfLog) || ctx.Err() != nil:
		return nil
	}
	return fmt.Errorf("read the event log: %w: %w", errdefs.ErrUnavailable, err)
}

// SkippedEvent is a message of the log that a read skipped because this
// build cannot use it: an event of a newer schema version than it reads
// (Newer), or a message that is not an event.
type SkippedEvent struct {
	Seq     uint64
	Subject string
	// Event is the message as stored, decoded as far as its envelope goes
	// (type, schema version, operation, actor …; the payload is not
	// upcast), or nil when it is not an envelope.
	Event *events.Envelope
	// Err is why it was skipped.
	Err error
}

// Newer reports whether the event was skipped for being of a newer schema
// version than this build reads.
func (s SkippedEvent) Newer() bool { return errors.Is(s.Err, events.ErrNewerVersion) }

// Reason says why the event was skipped, without its sequence.
func (s SkippedEvent) Reason() string {
	if s.Newer() && s.Event != nil {
		return fmt.Sprintf("%s schema v%d is newer than this build reads (v%d): upgrade it", s.Event.Type, s.Event.Version, events.SchemaVersion)
	}
	err := s.Err
	if inner := errors.Unwrap(err); inner != nil { // the decoder names the sequence and subject
		err = inner
	}
	if err == nil {
		return "it could not be read"
	}
	return err.Error()
}

// String describes the skipped event in one line: "skipped event #35 on
// SUBJECT: REASON".
func (s SkippedEvent) String() string {
	return fmt.Sprintf("skipped event #%d on %s: %s", s.Seq, s.Subject, s.Reason())
}

// WithWarn has fn told of each message of the log that a read skips
// (Events, History): an event of a newer schema version, or a message that
// is not an event. Without it they are skipped quietly. ctl prints them.
func WithWarn(fn func(SkippedEvent)) Option {
	return func(o *options) error {
		o.warn = fn
		return nil
	}
}

// With returns a client like c, on the same connection, with opts applied
// on top of c's settings. c is unchanged.
func (c *Client) With(opts ...Option) (*Client, error) {
	o := options{ns: c.ns, actor: c.actor, timeout: c.timeout, warn: c.warn}
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	d := *c
	d.ns, d.actor, d.timeout, d.warn = o.ns, o.actor, o.timeout, o.warn
	return &d, nil
}

// skippedEvent describes the message at seq that the follower could not
// decode (err), reading it again for what its envelope says when it is
// one. The read is best effort: without it Event is nil.
func (c *Client) skippedEvent(ctx context.Context, seq uint64, subject string, err error) SkippedEvent {
	sk := SkippedEvent{Seq: seq, Subject: subject, Err: err}
	s, serr := c.js.Stream(ctx, events.EventsStream)
	if serr != nil {
		return sk
	}
	raw, gerr := s.GetMsg(ctx, seq)
	if gerr != nil {
		return sk
	}
	var ev events.Envelope
	if json.Unmarshal(raw.Data, &ev) == nil && ev.Type != "" {
		ev.Seq = seq
		sk.Event = &ev
	}
	return sk
}

// lastMatching returns the sequence of the last event in the log that one
// of filters matches (all events if none), or 0 when there is none (or
// none at or after since, if set).
func (c *Client) lastMatching(ctx context.Context, filters []string, since *time.Time) (uint64, error) {
	s, err := c.js.Stream(ctx, events.EventsStream)
	if err != nil {
		return 0, fmt.Errorf("read the event log: %w: %w", errdefs.ErrUnavailable, err)
	}
	if len(filters) == 0 {
		filters = []string{events.EventsPrefix + ".>"}
	}
	var last uint64
	var at time.Time
	for _, f := range filters {
		m, err := s.GetLastMsgForSubject(ctx, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read the event log: last event on %s: %w: %w", f, errdefs.ErrUnavailable, err)
		}
		if m.Sequence > last {
			last, at = m.Sequence, m.Time
		}
	}
	if since != nil && at.Before(*since) {
		return 0, nil
	}
	return last, nil
}

// MarshalEvent encodes ev as its envelope's JSON with its log sequence
// added as "seq" (the stored envelope does not carry it).
func MarshalEvent(ev *events.Envelope) ([]byte, error) {
	b, err := json.Marshal(struct {
		Seq uint64 `json:"seq"`
		*events.Envelope
	}{ev.Seq, ev})
	if err != nil {
		return nil, fmt.Errorf("encode event %d: %w", ev.Seq, err)
	}
	return b, nil
}
