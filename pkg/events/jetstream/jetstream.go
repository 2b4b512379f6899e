// Package jetstream is the JetStream adapter for Stevedore's event log: it
// provisions the events stream, appends envelopes (with message-id dedup and
// per-subject optimistic concurrency), runs durable pull consumers that map
// handler errors to Ack / Nak with backoff / Term, and follows the log from a
// sequence with ordered consumers for projections and clients.
package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stevedore/stevedore/pkg/events"
)

// StreamConfig configures the events stream.
type StreamConfig struct {
	// Replicas for a clustered server; 0 or 1 on a single server.
	Replicas int
	// MaxAge ages events out; 0 keeps them forever (the default: the log is
	// the source of truth).
	MaxAge time.Duration
	// MaxBytes caps the stream's size; 0 for no cap.
	MaxBytes int64
	// Duplicates is the message-id dedup window; 0 for DefaultDuplicates.
	// It is capped at MaxAge when MaxAge is set and smaller: JetStream
	// refuses a window longer than the stream keeps its messages.
	Duplicates time.Duration
}

// DefaultDuplicates is the message-id dedup window of the events stream
// when StreamConfig.Duplicates is 0 (and MaxAge does not cap it).
const DefaultDuplicates = 10 * time.Minute

// duplicatesWindow returns the dedup window for cfg: Duplicates, or
// DefaultDuplicates when it is 0, capped at MaxAge when that is set and
// smaller.
func duplicatesWindow(cfg StreamConfig) time.Duration {
	dup := cfg.Duplicates
	if dup == 0 {
		dup = DefaultDuplicates
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < dup {
		dup = cfg.MaxAge
	}
	return dup
}

// EnsureStream creates the events stream or updates it to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	dup := duplicatesWindow(cfg)
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        events.EventsStream,
		Description: "Stevedore event log: the source of truth for every view",
		Subjects:    []string{events.EventsPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    maxBytes,
		Duplicates:  dup,
		Replicas:    max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", events.EventsStream, err)
	}
	return s, nil
}

// Publisher appends envelopes to the events stream. It implements
// events.Publisher.
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

// ErrWrongLastSequence is returned (wrapped) when an append guarded by an
// expected last sequence lost a race; it is events.ErrWrongLastSequence.
var ErrWrongLastSequence = events.ErrWrongLastSequence

// Publish appends ev and returns its stream sequence.
func (p *Publisher) Publish(ctx context.Context, ev *events.Envelope, opts ...events.PublishOption) (uint64, error) {
	var o events.PublishOptions
	for _, fn := range opts {
		fn(&o)
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("encode event %s: %w", ev.Type, err)
	}
	msg := &nats.Msg{Subject: ev.Subject(), Data: data, Header: nats.Header{}}
	msg.Header.Set("Sd-Type", string(ev.Type))
	if ev.Operation != "" {
		msg.Header.Set("Sd-Op", ev.Operation)
	}
	var popts []jetstream.PublishOpt
	if o.MsgID != "" {
		popts = append(popts, jetstream.WithMsgID(o.MsgID))
	}
	switch {
	case o.ExpectLastSubjectSeq != nil && o.ExpectSubject != "":
		popts = append(popts, jetstream.WithExpectLastSequenceForSubject(*o.ExpectLastSubjectSeq, o.ExpectSubject))
	case o.ExpectLastSubjectSeq != nil:
		popts = append(popts, jetstream.WithExpectLastSequencePerSubject(*o.ExpectLastSubjectSeq))
	}
	ack, err := p.js.PublishMsg(ctx, msg, popts...)
	if err == nil {
		obs().Published(string(ev.Type))
	}
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("append %s: %w: %w", ev.Subject(), ErrWrongLastSequence, err)
		}
		return 0, fmt.Errorf("append %s: %w", ev.Subject(), err)
	}
	return ack.Sequence, nil
}

// LastFor returns the last event on the subjects filter matches, or nil
// (and no error) when there is none. The event is upcast as Decode does; an
// event of a newer schema version comes back as stored (its Version says
// so).
func LastFor(ctx context.Context, js jetstream.JetStream, filter string) (*events.Envelope, error) {
	s, err := eventsStream(ctx, js)
	if err != nil {
		return nil, err
	}
	raw, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("last event on %s: %w", filter, err)
	}
	ev, err := events.Unmarshal(raw.Data)
	if err != nil && !errors.Is(err, events.ErrNewerVersion) {
		return nil, fmt.Errorf("decode event %d on %s: %w", raw.Sequence, raw.Subject, err)
	}
	ev.Seq = raw.Sequence
	return ev, nil
}

// streams caches each JetStream's handle on the events stream: getting
// one costs a STREAM.INFO round trip, and LastFor is on the hot path of
// every worker decision. A handle names the stream and nothing else that
// goes stale: its requests go by name.
var streams sync.Map // jetstream.JetStream → jetstream.Stream

func eventsStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	if s, ok := streams.Load(js); ok {
		return s.(jetstream.Stream), nil
	}
	s, err := js.Stream(ctx, events.EventsStream)
	if err != nil {
		return nil, fmt.Errorf("events stream: %w", err)
	}
	streams.Store(js, s)
	return s, nil
}

// Decode turns a stream message into an envelope with its sequence set,
// upcast to events.SchemaVersion by the registered upcasters (see
// events.RegisterUpcaster). For an event of a newer schema version it
// returns the envelope as stored and an error wrapping
// events.ErrNewerVersion; for anything else it cannot read, nil and the
// error.
func Decode(msg jetstream.Msg) (*events.Envelope, error) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	ev, err := events.Unmarshal(msg.Data())
	if ev != nil {
		ev.Seq = seq
	}
	if err != nil {
		return ev, fmt.Errorf("decode event %d on %s: %w", seq, msg.Subject(), err)
	}
	return ev, nil
}

// Progress publishes live progress ticks on core NATS (not persisted).
type Progress struct {
	nc *nats.Conn
}

// NewProgress returns a progress publisher over nc.
func NewProgress(nc *nats.Conn) *Progress { return &Progress{nc: nc} }

// PublishProgress sends one tick for operation op. Ticks are best effort:
// a lost tick only makes a progress bar lag.
func (p *Progress) PublishProgress(op string, pr events.Progress) {
	if op == "" {
		return
	}
	b, err := json.Marshal(pr)
	if err != nil {
		return
	}
	_ = p.nc.Publish(events.ProgressSubject(op), b)
}
