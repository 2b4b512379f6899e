package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
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
	// LagInterval is how often the consumer's pending counts are sampled
	// into the metrics (default 5s).
	LagInterval time.Duration
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
	if c.LagInterval <= 0 {
		c.LagInterval = 5 * time.Second
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
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		sampleLag(lagCtx, cons, &cfg)
	}()
	defer func() {
		stopLag()
		<-lagDone
	}()

	// Each of Concurrency workers asks for one event only when it is free
	// to handle it. A process holds no event it is not working on, so work
	// spreads evenly over instances (a prefetching iterator let one busy
	// fetcher sit on events an idle one could have taken).
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				msg, err := next(ctx, cons)
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
						cfg.Logger.Warn().Err(err).Str("consumer", cfg.Durable).Msg("fetching work failed; retrying")
						select {
						case <-ctx.Done():
						case <-time.After(500 * time.Millisecond):
						}
					}
					continue
				}
				handleOne(ctx, &cfg, h, msg)
			}
		}()
	}
	wg.Wait()
	return nil
}

// pullWait is how long one request for work waits at the server.
const pullWait = 30 * time.Second

// next waits for one event, or until ctx ends or pullWait passes.
func next(ctx context.Context, cons jetstream.Consumer) (jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, pullWait)
	defer cancel()
	return cons.Next(jetstream.FetchContext(fctx))
}

// sampleLag samples the consumer's pending counts into the metrics every
// cfg.LagInterval until ctx ends.
func sampleLag(ctx context.Context, cons jetstream.Consumer, cfg *ConsumerConfig) {
	t := time.NewTicker(cfg.LagInterval)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, cfg.LagInterval)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			obs().ConsumerLag(cfg.Durable, info.NumPending, uint64(info.NumAckPending))
		} else if ctx.Err() == nil {
			cfg.Logger.Debug().Err(err).Str("consumer", cfg.Durable).Msg("could not sample the consumer's lag")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Handler outcomes, as told to Observer.Handled.
const (
	outcomeOK       = "ok"       // handled and acknowledged
	outcomeRetry    = "retry"    // failed; redelivered after a backoff
	outcomeFailed   = "failed"   // given up and recorded as a failure
	outcomeShutdown = "shutdown" // interrupted by shutdown; redelivered at once
)

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
	if errors.Is(err, events.ErrNewerVersion) {
		// Written by a newer build: this one cannot know what it means.
		// Acknowledge it so that it does not hold up the consumer; the
		// newer build's workers handle it.
		obs().Skipped(cfg.Durable, "newer-schema")
		log.Warn().Err(err).Int("version", ev.Version).Uint64("seq", md.Sequence.Stream).Msg("event from a newer schema; skipping it")
		_ = msg.Ack()
		return
	}
	if err != nil {
		// An event we cannot read can never be handled: record and drop.
		obs().Skipped(cfg.Durable, "undecodable")
		log.Error().Err(err).Uint64("seq", md.Sequence.Stream).Msg("undecodable event; terminating it")
		_ = msg.TermWithReason("undecodable")
		return
	}
	d := events.Delivery{Attempt: int(md.NumDelivered), MaxAttempts: cfg.MaxAttempts}
	if d.Attempt > 1 {
		obs().Redelivered(cfg.Durable, string(ev.Type))
	}
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
	took := time.Since(start)
	close(done)
	cancel()
	log = log.With().Uint64("seq", ev.Seq).Str("type", string(ev.Type)).Str("op", ev.Operation).Int("attempt", d.Attempt).Dur("took", took).Logger()
	observe := func(outcome string) {
		obs().Handled(cfg.Durable, string(ev.Type), outcome, took)
	}

	if herr == nil {
		observe(outcomeOK)
		if err := msg.DoubleAck(ctx); err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("ack not confirmed; the event may be redelivered (handlers are idempotent)")
		}
		log.Debug().Msg("handled")
		return
	}
	if ctx.Err() != nil {
		// Shutting down: let another instance take it without delay.
		observe(outcomeShutdown)
		_ = msg.Nak()
		return
	}
	if events.IsPermanent(herr) || d.Attempt >= cfg.MaxAttempts {
		observe(outcomeFailed)
		log.Warn().Err(herr).Bool("permanent", events.IsPermanent(herr)).Msg("giving up; recording failure")
		if ferr := cfg.OnFailure(ctx, ev, herr); ferr != nil {
			log.Error().Err(ferr).Msg("could not record failure; will retry")
			_ = msg.NakWithDelay(backoff(cfg.Backoff, d.Attempt))
			return
		}
		obs().FailureRecorded(cfg.Durable, string(ev.Type))
		_ = msg.TermWithReason(truncate(herr.Error(), 200))
		return
	}
	observe(outcomeRetry)
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

// AwaitConsumer is EnsureConsumer for a worker that may start before the
// gateway has created the events stream: it retries every half second,
// logging that it waits, until the consumer exists or ctx ends.
func AwaitConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) error {
	for {
		_, err := EnsureConsumer(ctx, js, cfg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for the event log: %w", err)
		}
		cfg.Logger.Info().Err(err).Msg("waiting for the event log")
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}
