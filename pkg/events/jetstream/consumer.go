package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/events"
)

// ConsumerConfig configures a durable worker consumer. Every process of one
// worker kind uses the same Durable name, so JetStream spreads the work.
type ConsumerConfig struct {
	// Durable names the consumer shared by all instances of a worker kind.
	Durable string
	// Filters are the subjects this worker reacts to.
	Filters []string
	// Concurrency is how many events one process handles at once (default 4).
	Concurrency int
	// AckWait is how long an unacknowledged delivery is held before
	// redelivery (default 15s). In-progress acks are sent every AckWait/3
	// while a handler runs, so long work is not redelivered; a killed worker's
	// events are redelivered after AckWait.
	AckWait time.Duration
	// MaxAttempts is how many deliveries an event gets before its handling
	// is given up and OnFailure records the failure (default 5).
	MaxAttempts int
	// Backoff is the redelivery delay after the n-th failed attempt; the
	// last entry repeats (default 0.5s, 1s, 2s, 4s).
	Backoff []time.Duration
	// OnFailure records a given-up event as a failure fact. Required.
	OnFailure events.FailureFunc
	// Logger receives handler outcomes.
	Logger zerolog.Logger
}

func (c *ConsumerConfig) defaults() error {
	if c.Durable == "" || len(c.Filters) == 0 {
		return errors.New("consumer config: durable name and filters are required")
	}
	if c.OnFailure == nil {
		return errors.New("consumer config: OnFailure is required, so that no failure is silently dropped")
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.AckWait <= 0 {
		c.AckWait = 15 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	}
	return nil
}

// EnsureConsumer creates or updates the durable consumer described by cfg.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) (jetstream.Consumer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c, err := js.CreateOrUpdateConsumer(ctx, events.EventsStream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		// Redelivery is unlimited at the server; the adapter gives up after
		// MaxAttempts and records a failure first, so nothing is dropped
		// silently when the failure event itself cannot be written.
		MaxDeliver:    -1,
		MaxAckPending: 1024,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("provision consumer %s: %w", cfg.Durable, err)
	}
	return c, nil
}

// Consume runs h over the durable consumer until ctx ends. It returns nil
// when ctx is cancelled, or the error that stopped consumption.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h events.Handler) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	cons, err := EnsureConsumer(ctx, js, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(cfg.Concurrency))
	if err != nil {
		return fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()

	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("consume %s: %w", cfg.Durable, err)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			handleOne(ctx, &cfg, h, msg)
		}()
	}
}

// handleOne runs one delivery and settles it.
func handleOne(ctx context.Context, cfg *ConsumerConfig, h events.Handler, msg jetstream.Msg) {
	log := cfg.Logger.With().Str("consumer", cfg.Durable).Str("subject", msg.Subject()).Logger()
	md, err := msg.Metadata()
	if err != nil {
		log.Error().Err(err).Msg("message without metadata; terminating it")
		_ = msg.TermWithReason("no metadata")
		return
	}
	ev, err := Decode(msg)
	if err != nil {
		// An event we cannot read can never be handled: record and drop.
		log.Error().Err(err).Uint64("seq", md.Sequence.Stream).Msg("undecodable event; terminating it")
		_ = msg.TermWithReason("undecodable")
		return
	}
	if ev.Version > events.SchemaVersion {
		log.Warn().Int("version", ev.Version).Uint64("seq", ev.Seq).Msg("event from a newer schema; skipping it")
		_ = msg.Ack()
		return
	}
	d := events.Delivery{Attempt: int(md.NumDelivered), MaxAttempts: cfg.MaxAttempts}
	hctx, cancel := context.WithCancel(events.WithDelivery(ctx, d))
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	start := time.Now()
	herr := h.Handle(hctx, ev)
	close(done)
	cancel()
	log = log.With().Uint64("seq", ev.Seq).Str("type", string(ev.Type)).Str("op", ev.Operation).Int("attempt", d.Attempt).Dur("took", time.Since(start)).Logger()

	if herr == nil {
		if err := msg.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("ack not confirmed; the event may be redelivered (handlers are idempotent)")
		}
		log.Debug().Msg("handled")
		return
	}
	if ctx.Err() != nil {
		// Shutting down: let another instance take it without delay.
		_ = msg.Nak()
		return
	}
	if events.IsPermanent(herr) || d.Attempt >= cfg.MaxAttempts {
		log.Warn().Err(herr).Bool("permanent", events.IsPermanent(herr)).Msg("giving up; recording failure")
		if ferr := cfg.OnFailure(ctx, ev, herr); ferr != nil {
			log.Error().Err(ferr).Msg("could not record failure; will retry")
			_ = msg.NakWithDelay(backoff(cfg.Backoff, d.Attempt))
			return
		}
		_ = msg.TermWithReason(truncate(herr.Error(), 200))
		return
	}
	delay := backoff(cfg.Backoff, d.Attempt)
	log.Info().Err(herr).Dur("retry_in", delay).Msg("handler failed; will retry")
	_ = msg.NakWithDelay(delay)
}

func backoff(b []time.Duration, attempt int) time.Duration {
	i := attempt - 1
	if i < 0 {
		i = 0
	}
	if i >= len(b) {
		i = len(b) - 1
	}
	return b[i]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// FollowConfig says which part of the log to follow.
type FollowConfig struct {
	// Filters are subject filters; empty means every event.
	Filters []string
	// StartSeq is the first sequence to deliver; 0 means from the beginning.
	StartSeq uint64
	// StartTime, if set and StartSeq is 0, starts at the first event at or after it.
	StartTime *time.Time
	// Undecodable is called, in log order, for a message that is not an
	// event envelope; returning nil skips it. If nil, Follow stops with the
	// decode error.
	Undecodable func(seq uint64, subject string, err error) error
}

// Follow delivers events in log order to fn, starting at cfg.StartSeq, and
// keeps following new events until ctx ends or fn returns an error. It
// returns nil when ctx ends, otherwise fn's error. Ordered consumers hold no
// server-side state worth keeping: the follower keeps its own position.
func Follow(ctx context.Context, js jetstream.JetStream, cfg FollowConfig, fn func(*events.Envelope) error) error {
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
	it, err := cons.Messages()
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
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("follow events: %w", err)
		}
		ev, err := Decode(msg)
		if err != nil {
			if cfg.Undecodable == nil {
				return err
			}
			var seq uint64
			if md, mdErr := msg.Metadata(); mdErr == nil {
				seq = md.Sequence.Stream
			}
			if err := cfg.Undecodable(seq, msg.Subject(), err); err != nil {
				return err
			}
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// LastSeq returns the stream's last sequence (0 for an empty log).
func LastSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(ctx, events.EventsStream)
	if err != nil {
		return 0, fmt.Errorf("events stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("events stream info: %w", err)
	}
	return info.State.LastSeq, nil
}
