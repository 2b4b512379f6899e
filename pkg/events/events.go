// Package events defines Stevedore's event log: the envelope every fact is
// wrapped in, the event types and their payloads, the subjects they are
// published on, and the small interfaces workers use to publish and consume
// them. The JetStream adapter that implements those interfaces lives in
// events/jetstream; handlers never see NATS directly.
//
// The catalogue of events, with subjects and payloads, is docs/events.md.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nuid"
)

// SchemaVersion is the envelope/payload schema version this build writes.
const SchemaVersion = 1

// Type names an event. The type is the last token of the event's subject.
type Type string

// Aggregate kinds: the second token of an event subject after the namespace.
const (
	KindPull  = "pull"  // one pull operation; id is the operation id
	KindBlob  = "blob"  // one blob; id is the digest's hex
	KindImage = "image" // one image name; id is EncodeToken(name)
)

// Envelope wraps every event. Payload holds the type's payload as JSON.
type Envelope struct {
	ID        string    `json:"id"`
	Type      Type      `json:"type"`
	Version   int       `json:"v"`
	Time      time.Time `json:"time"`
	Namespace string    `json:"ns"`
	Aggregate Aggregate `json:"aggregate"`
	Operation string    `json:"op,omitempty"`
	Causation string    `json:"causation,omitempty"`
	Actor     string    `json:"actor,omitempty"`
	// Node is the node the event concerns: for a worker's fact the node
	// of the worker that recorded it; for a request, the node asked to
	// act on it. It is the last token of the event's subject, so a node's
	// workers consume only their node's events.
	Node    string          `json:"node,omitempty"`
	Payload json.RawMessage `json:"payload"`

	// Seq is the log's sequence number for this event. It is set when the
	// event is read from the log and is not part of the stored JSON.
	Seq uint64 `json:"-"`
}

// Aggregate names the thing an event is about.
type Aggregate struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// Subject returns the subject the envelope is published on.
func (e *Envelope) Subject() string {
	return Subject(e.Namespace, e.Aggregate.Kind, e.Aggregate.ID, e.Type, e.Node)
}

// Decode unmarshals the payload into v.
func (e *Envelope) Decode(v any) error {
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("decode %s payload: %w", e.Type, err)
	}
	return nil
}

// Meta carries the correlation fields a new event inherits from the event or
// request that caused it.
type Meta struct {
	Namespace string
	Operation string
	Causation string
	Actor     string
	Node      string
}

// MetaFrom returns the Meta an event caused by e should carry.
func MetaFrom(e *Envelope, node string) Meta {
	return Meta{Namespace: e.Namespace, Operation: e.Operation, Causation: e.ID, Actor: e.Actor, Node: node}
}

// New builds an envelope for payload. Its ID is fresh, its time is now.
func New(m Meta, t Type, agg Aggregate, payload any) (*Envelope, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", t, err)
	}
	return &Envelope{
		ID:        nuid.Next(),
		Type:      t,
		Version:   SchemaVersion,
		Time:      time.Now().UTC(),
		Namespace: m.Namespace,
		Aggregate: agg,
		Operation: m.Operation,
		Causation: m.Causation,
		Actor:     m.Actor,
		Node:      m.Node,
		Payload:   b,
	}, nil
}

// PublishOptions guard an append.
type PublishOptions struct {
	// MsgID deduplicates retried appends: a second append with the same id
	// within the log's duplicate window is not a second fact.
	MsgID string
	// ExpectLastSubjectSeq, if set, makes the append fail unless the last
	// event on this subject (or, with ExpectSubject, on the subjects that
	// filter matches) has exactly this sequence (0: none yet).
	ExpectLastSubjectSeq *uint64
	// ExpectSubject is the subject filter ExpectLastSubjectSeq applies to;
	// empty means the event's own subject.
	ExpectSubject string
}

// PublishOption sets a PublishOptions field.
type PublishOption func(*PublishOptions)

// WithMsgID deduplicates the append by id.
func WithMsgID(id string) PublishOption { return func(o *PublishOptions) { o.MsgID = id } }

// WithExpectLastSubjectSeq serializes the append against the subject's last sequence.
func WithExpectLastSubjectSeq(seq uint64) PublishOption {
	return func(o *PublishOptions) { o.ExpectLastSubjectSeq = &seq }
}

// WithExpectLastSeqFor serializes the append against the last sequence of
// every subject filter matches, e.g. all of one container's events.
func WithExpectLastSeqFor(seq uint64, filter string) PublishOption {
	return func(o *PublishOptions) { o.ExpectLastSubjectSeq, o.ExpectSubject = &seq, filter }
}

// ErrWrongLastSequence is returned (wrapped) by a Publisher when an append
// guarded by an expected last sequence lost a race with another append.
var ErrWrongLastSequence = errors.New("wrong last sequence")

// Publisher appends events to the log.
type Publisher interface {
	// Publish appends ev and returns its sequence in the log. A deduplicated
	// append returns the original's sequence and no error.
	Publish(ctx context.Context, ev *Envelope, opts ...PublishOption) (uint64, error)
}

// Handler reacts to one event. Returning nil acknowledges it. An error
// wrapping ErrPermanent (see Permanent) ends its delivery; any other error
// asks for redelivery with backoff, until the consumer's delivery limit.
type Handler interface {
	Handle(ctx context.Context, ev *Envelope) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, ev *Envelope) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, ev *Envelope) error { return f(ctx, ev) }

// FailureFunc is called once when an event's handling is given up: the
// handler returned a permanent error, or the last allowed delivery failed.
// It should record the failure as an event. If it returns an error the event
// is redelivered, so the failure itself is never silently lost.
type FailureFunc func(ctx context.Context, ev *Envelope, cause error) error

// Delivery describes the current delivery of the event being handled.
type Delivery struct {
	Attempt     int // 1 for the first delivery
	MaxAttempts int // the consumer's limit; 0 for none
}

type deliveryKey struct{}

// WithDelivery returns ctx carrying d. Adapters call it before Handle.
func WithDelivery(ctx context.Context, d Delivery) context.Context {
	return context.WithValue(ctx, deliveryKey{}, d)
}

// DeliveryFrom returns the delivery ctx carries, or the zero Delivery.
func DeliveryFrom(ctx context.Context) Delivery {
	d, _ := ctx.Value(deliveryKey{}).(Delivery)
	return d
}

// Cause is what a request made on behalf of an event is part of: the
// event's operation and actor, and the event's id as the causation.
type Cause struct {
	Operation string
	Actor     string
	Causation string
}

type causeKey struct{}

// WithCause returns ctx carrying ev as the cause of the requests made with
// it, so that what they record joins ev's operation (see CauseFrom). A nil
// ev returns ctx as it is.
func WithCause(ctx context.Context, ev *Envelope) context.Context {
	if ev == nil {
		return ctx
	}
	return context.WithValue(ctx, causeKey{}, Cause{Operation: ev.Operation, Actor: ev.Actor, Causation: ev.ID})
}

// CauseFrom returns the cause WithCause put on ctx, if any.
func CauseFrom(ctx context.Context) (Cause, bool) {
	c, ok := ctx.Value(causeKey{}).(Cause)
	return c, ok
}
