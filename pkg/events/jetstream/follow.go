package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/events"
)

// Batching defaults for FollowBatches.
const (
	DefaultBatchSize  = 1024
	DefaultBatchDelay = 50 * time.Millisecond
)

// FollowConfig says which part of the log to follow.
type FollowConfig struct {
	// Filters are subject filters; empty means every event.
	Filters []string
	// StartSeq is the first sequence to deliver; 0 means from the beginning.
	StartSeq uint64
	// StartTime, if set and StartSeq is 0, starts at the first event at or after it.
	StartTime *time.Time
	// Undecodable is called, in log order, for a message that is not an
	// event envelope, and for an event of a newer schema version than this
	// build reads (err wraps events.ErrNewerVersion); returning nil skips
	// it. If nil, a newer event is skipped (and logged) and an unreadable
	// message stops Follow with the decode error.
	Undecodable func(seq uint64, subject string, err error) error
	// BatchSize is the most events FollowBatches delivers at once
	// (default DefaultBatchSize).
	BatchSize int
	// BatchDelay is how long FollowBatches holds a batch open for more
	// events while the log has more to deliver (default DefaultBatchDelay).
	// A batch is delivered at once when the follower has caught up.
	BatchDelay time.Duration
	// Name names the follower in logs and metrics (default "follow").
	Name string
	// Logger receives skipped events.
	Logger zerolog.Logger
}

// Follow delivers events in log order to fn, starting at cfg.StartSeq, and
// keeps following new events until ctx ends or fn returns an error. It
// returns nil when ctx ends, otherwise fn's error. Ordered consumers hold no
// server-side state worth keeping: the follower keeps its own position.
// Events are upcast as Decode does.
func Follow(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, fn func(*events.Envelope) error) error {
	return follow(ctx, js, &cfg, nil, func(it jetstream.MessagesContext) error {
		for {
			msg, err := it.Next()
			if err != nil {
				return err
			}
			ev, _, skipped, err := cfg.read(msg)
			if err != nil {
				return err
			}
			if skipped {
				continue
			}
			if err := fn(ev); err != nil {
				return readError{err}
			}
		}
	})
}

// FollowBatches is Follow for followers that commit many events at once,
// such as a projection catching up. It delivers events in log order, in
// batches of up to cfg.BatchSize: a batch is delivered when it is full,
// when the follower has caught up with the log, or cfg.BatchDelay after its
// first event, whichever comes first, so a live tail is delivered promptly.
// pending is how many events the log held after the batch's last one when
// it was read (the follower's lag).
//
// A message that cfg.Undecodable skips (and a newer event, when
// Undecodable is nil) is delivered in its place in the batch as an
// envelope with only Seq set, so a follower that keeps its position in the
// log advances past it. The next batch is read while fn applies one.
func FollowBatches(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, fn func(batch []*events.Envelope, pending uint64) error) error {
	size := cfg.BatchSize
	if size <= 0 {
		size = DefaultBatchSize
	}
	delay := cfg.BatchDelay
	if delay <= 0 {
		delay = DefaultBatchDelay
	}
	opts := []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(max(2*size, 500))}
	return follow(ctx, js, &cfg, opts, func(it jetstream.MessagesContext) error {
		// Reading and decoding the next batch overlaps with fn applying
		// this one.
		out := make(chan delivered, 1)
		stop := make(chan struct{})
		readErr := make(chan error, 1)
		go func() {
			defer close(out)
			readErr <- cfg.readBatches(it, size, delay, out, stop)
		}()
		for d := range out {
			if err := fn(d.batch, d.pending); err != nil {
				close(stop)
				it.Stop()
				for range out {
				}
				return readError{err}
			}
		}
		return <-readErr
	})
}

// delivered is one batch for FollowBatches' fn.
type delivered struct {
	batch   []*events.Envelope
	pending uint64
}

// readBatches reads messages from it into batches as FollowBatches says
// and sends them on out, until reading fails (its error) or stop is closed
// (nil).
func (cfg *FollowConfig) readBatches(it jetstream.MessagesContext, size int, delay time.Duration, out chan<- delivered, stop <-chan struct{}) error {
	batch := make([]*events.Envelope, 0, size)
	var pending uint64
	var deadline time.Time
	send := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case out <- delivered{batch, pending}:
			batch = make([]*events.Envelope, 0, size)
			return true
		case <-stop:
			return false
		}
	}
	for {
		var msg jetstream.Msg
		var err error
		if len(batch) == 0 {
			msg, err = it.Next()
		} else {
			wait := time.Until(deadline)
			if wait <= 0 {
				if !send() {
					return nil
				}
				continue
			}
			msg, err = it.Next(jetstream.NextMaxWait(wait))
			if errors.Is(err, nats.ErrTimeout) {
				if !send() {
					return nil
				}
				continue
			}
		}
		if err != nil {
			return err
		}
		ev, left, _, err := cfg.read(msg)
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			deadline = time.Now().Add(delay)
		}
		batch = append(batch, ev)
		pending = left
		if len(batch) >= size || pending == 0 {
			if !send() {
				return nil
			}
		}
	}
}

// follow runs loop over an ordered consumer of the log as cfg says. It
// returns nil when ctx ends or the iterator is closed, else loop's error.
func follow(ctx context.Context, js jetstream.JetStream, cfg *FollowConfig, opts []jetstream.PullMessagesOpt, loop func(jetstream.MessagesContext) error) error {
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: cfg.Filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case cfg.StartSeq > 1:
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = cfg.StartSeq
	case cfg.StartTime != nil:
		occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		occ.OptStartTime = cfg.StartTime
	}
	cons, err := js.OrderedConsumer(ctx, events.EventsStream, occ)
	if err != nil {
		return fmt.Errorf("follow events: %w", err)
	}
	it, err := cons.Messages(opts...)
	if err != nil {
		return fmt.Errorf("follow events: %w", err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		it.Stop()
	}()
	err = loop(it)
	var re readError
	switch {
	case errors.As(err, &re):
		return re.err
	case err == nil:
		return nil
	case ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed):
		return nil
	}
	return fmt.Errorf("follow events: %w", err)
}

// readError carries an error of the follower's own (fn's, Undecodable's,
// a decode error) out of the loop unwrapped.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }

// read decodes msg. It returns the event, or for a message that is skipped
// an envelope with only Seq set and skipped true; and how many messages the
// log held after it. Its errors are readErrors.
func (cfg *FollowConfig) read(msg jetstream.Msg) (ev *events.Envelope, pending uint64, skipped bool, err error) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq, pending = md.Sequence.Stream, md.NumPending
	}
	ev, err = Decode(msg)
	if err == nil {
		return ev, pending, false, nil
	}
	name := cfg.Name
	if name == "" {
		name = "follow"
	}
	newer := errors.Is(err, events.ErrNewerVersion)
	reason := "undecodable"
	if newer {
		reason = "newer-schema"
	}
	switch {
	case cfg.Undecodable != nil:
		if uerr := cfg.Undecodable(seq, msg.Subject(), err); uerr != nil {
			return nil, 0, false, readError{uerr}
		}
	case newer:
		cfg.Logger.Warn().Err(err).Str("follower", name).Uint64("seq", seq).Msg("event from a newer schema; skipping it")
	default:
		return nil, 0, false, readError{err}
	}
	obs().Skipped(name, reason)
	return &events.Envelope{Seq: seq}, pending, true, nil
}

// LastSeq returns the stream's last sequence (0 for an empty log).
func LastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	info, err := StreamState(ctx, js)
	if err != nil {
		return 0, err
	}
	return info.LastSeq, nil
}

// StreamState returns the events stream's state: its first and last
// sequences (FirstSeq above 1 means older events have aged out), message
// and byte counts.
func StreamState(ctx context.Context, js jetstream.JetStream) (jetstream.StreamState, error) {
	// One STREAM.INFO: the handle js.Stream returns carries the info it read.
	s, err := js.Stream(ctx, events.EventsStream)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("events stream: %w", err)
	}
	return s.CachedInfo().State, nil
}
