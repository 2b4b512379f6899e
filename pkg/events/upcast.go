package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Schema versions. Every envelope carries the version of the schema it was
// written with in "v" (an envelope without one is version 0). The version is
// one number for envelope and payloads together: when any payload changes
// shape, SchemaVersion goes up by one, and an upcaster registered for the
// changed type turns an old payload into the new shape. Types without an
// upcaster for a version are unchanged by it.
//
// Upcasting happens when an event is read (Unmarshal, which the log adapter
// uses for consumers and followers), so handlers and projections only ever
// see the current shape. An event of a version newer than this build knows
// is not handled: Unmarshal returns it with an error wrapping
// ErrNewerVersion, and readers skip it (consumers acknowledge it, followers
// advance past it) with a warning, never a crash.

// UpcastFunc turns the payload of an event of one schema version into the
// payload of the next version.
type UpcastFunc func(payload json.RawMessage) (json.RawMessage, error)

// ErrNewerVersion is returned (wrapped) for an event written with a schema
// version newer than the reader's.
var ErrNewerVersion = errors.New("event from a newer schema version")

// Upcasters holds the upcasters from each older schema version to the next,
// per event type, up to a current version. Its methods are safe for
// concurrent use.
type Upcasters struct {
	current int
	mu      sync.RWMutex
	fns     map[upcastKey]UpcastFunc
}

type upcastKey struct {
	t    Type
	from int
}

// NewUpcasters returns an empty registry whose current version is current.
func NewUpcasters(current int) *Upcasters {
	return &Upcasters{current: current, fns: map[upcastKey]UpcastFunc{}}
}

// Current is the schema version the registry upcasts to.
func (u *Upcasters) Current() int { return u.current }

// Register adds fn as the upcaster of type t's payload from version from to
// from+1. It panics if from is not below the current version, fn is nil or
// an upcaster is registered already: registrations are made at init time,
// and a mistake there is a programming error.
func (u *Upcasters) Register(t Type, from int, fn UpcastFunc) {
	switch {
	case fn == nil:
		panic(fmt.Sprintf("events: nil upcaster for %s v%d", t, from))
	case from < 0 || from >= u.current:
		panic(fmt.Sprintf("events: upcaster for %s from v%d: want a version in [0, %d)", t, from, u.current))
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	k := upcastKey{t, from}
	if _, ok := u.fns[k]; ok {
		panic(fmt.Sprintf("events: upcaster for %s from v%d registered twice", t, from))
	}
	u.fns[k] = fn
}

// Upcast brings ev to the current version in place, running the upcasters
// of its type from its version on. An event of the current version is left
// alone. An event of a newer version is left alone and the error wraps
// ErrNewerVersion; an upcaster's error is returned wrapped, and ev is then
// unchanged.
func (u *Upcasters) Upcast(ev *Envelope) error {
	switch {
	case ev.Version == u.current:
		return nil
	case ev.Version > u.current:
		return fmt.Errorf("%s event %s is schema v%d, this build reads up to v%d: %w", ev.Type, ev.ID, ev.Version, u.current, ErrNewerVersion)
	case ev.Version < 0:
		return fmt.Errorf("%s event %s has schema version %d", ev.Type, ev.ID, ev.Version)
	}
	payload := ev.Payload
	u.mu.RLock()
	defer u.mu.RUnlock()
	for v := ev.Version; v < u.current; v++ {
		fn, ok := u.fns[upcastKey{ev.Type, v}]
		if !ok {
			continue
		}
		out, err := fn(payload)
		if err != nil {
			return fmt.Errorf("upcast %s event %s from v%d: %w", ev.Type, ev.ID, v, err)
		}
		payload = out
	}
	ev.Payload, ev.Version = payload, u.current
	return nil
}

// Unmarshal decodes one stored event and upcasts it. For an event of a
// newer version it returns the envelope as stored and an error wrapping
// ErrNewerVersion, so the caller can say which event it skips.
func (u *Upcasters) Unmarshal(data []byte) (*Envelope, error) {
	var ev Envelope
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, fmt.Errorf("not an event envelope: %w", err)
	}
	if err := u.Upcast(&ev); err != nil {
		if errors.Is(err, ErrNewerVersion) {
			return &ev, err
		}
		return nil, err
	}
	return &ev, nil
}

// defaultUpcasters upcasts to SchemaVersion; the log adapter reads with it.
var defaultUpcasters = NewUpcasters(SchemaVersion)

// RegisterUpcaster registers fn as the upcaster of type t's payload from
// schema version from to from+1, for every event this process reads. Call
// it from an init function; see Upcasters.Register.
func RegisterUpcaster(t Type, from int, fn UpcastFunc) { defaultUpcasters.Register(t, from, fn) }

// Unmarshal decodes one stored event and upcasts it to SchemaVersion with
// the registered upcasters; see Upcasters.Unmarshal.
func Unmarshal(data []byte) (*Envelope, error) { return defaultUpcasters.Unmarshal(data) }
