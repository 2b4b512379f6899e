package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/view"
)

// SubjectViewDigest is a hidden endpoint for tests and operators: a request
// on it (any body) is answered by one gateway with a ViewDigest of its view.
// Comparing it with the digest of a view rebuilt from the log up to the
// same sequence checks design invariant 4 on a live system.
const SubjectViewDigest = "sd.api.view.digest"

// ViewDigest is the reply on SubjectViewDigest.
type ViewDigest struct {
	// Seq is the log sequence the view has applied.
	Seq uint64 `json:"seq"`
	// SHA256 is the hex SHA-256 of the view's dump (view.View.Digest) at Seq.
	SHA256 string `json:"sha256"`
	// Node is the answering gateway's node.
	Node string `json:"node"`
	// Error, if set, says why there is no digest.
	Error string `json:"error,omitempty"`
}

// startDigest answers SubjectViewDigest. It is a plain subscription, not an
// endpoint of the API service: it is not part of the API.
func (g *Gateway) startDigest() (*nats.Subscription, error) {
	sub, err := g.cfg.Conn.QueueSubscribe(SubjectViewDigest, QueueGroup, func(msg *nats.Msg) {
		d := ViewDigest{Node: g.cfg.Node}
		var err error
		if d.Seq, d.SHA256, err = g.cfg.View.Digest(); err != nil {
			d = ViewDigest{Node: g.cfg.Node, Error: err.Error()}
		}
		b, _ := json.Marshal(d)
		_ = msg.Respond(b)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: subscribe %s: %w", SubjectViewDigest, err)
	}
	return sub, nil
}

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	// JS reads the events log. Required.
	JS jetstream.JetStream
	// View is the view to build: new and empty. Required.
	View *view.View
	// AllowPartial rebuilds even when older events have aged out of the
	// log, knowing that the view will lack their facts.
	AllowPartial bool
	// BatchSize is the most events applied in one view commit (default
	// sdjs.DefaultBatchSize).
	BatchSize int
	// ProgressEvery is how often progress is logged (default 5s).
	ProgressEvery time.Duration
	// Logger receives progress.
	Logger zerolog.Logger
}

// ErrLogTrimmed is returned (wrapped, with errdefs.ErrFailedPrecondition)
// by Rebuild when the log no longer starts at sequence 1.
var ErrLogTrimmed = errors.New("the event log has been trimmed")

// errRebuilt ends a rebuild's follow once it reached its target.
var errRebuilt = errors.New("rebuilt")

// Rebuild projects the events log from its start into cfg.View, up to the
// log's last sequence when it starts, and returns that sequence. It logs
// its progress (events per second, percent of the target). It refuses,
// with an error wrapping ErrLogTrimmed, when events have aged out of the
// log (its first sequence is above 1) unless cfg.AllowPartial is set:
// such a view would silently lack their facts (docs/log-retention.md).
func Rebuild(ctx context.Context, cfg RebuildConfig) (uint64, error) {
	if cfg.JS == nil || cfg.View == nil {
		return 0, fmt.Errorf("rebuild view: log and view are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.View.AppliedSeq() != 0 {
		return 0, fmt.Errorf("rebuild view: the view is not empty (applied %d): %w", cfg.View.AppliedSeq(), errdefs.ErrFailedPrecondition)
	}
	every := cfg.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	log := cfg.Logger.With().Str("component", "rebuild").Logger()
	st, err := sdjs.StreamState(ctx, cfg.JS)
	if err != nil {
		return 0, fmt.Errorf("rebuild view: %w", err)
	}
	if st.FirstSeq > 1 {
		if !cfg.AllowPartial {
			return 0, fmt.Errorf("rebuild view: the log starts at sequence %d: events 1 to %d have aged out (--log-max-age, --log-max-bytes), and a view rebuilt without them lacks their facts; keep the current view, or rebuild from what remains with --allow-partial-rebuild: %w: %w",
				st.FirstSeq, st.FirstSeq-1, ErrLogTrimmed, errdefs.ErrFailedPrecondition)
		}
		log.Warn().Uint64("first", st.FirstSeq).Msg("rebuilding from a trimmed log: the view will lack the facts of the events that aged out")
	}
	target := st.LastSeq
	if target == 0 {
		log.Info().Msg("the event log is empty; nothing to rebuild")
		return 0, nil
	}
	start := time.Now()
	lastLog, lastSeq := start, uint64(0)
	log.Info().Uint64("target", target).Uint64("first", st.FirstSeq).Msg("rebuilding the view from the event log")
	err = sdjs.FollowBatches(ctx, cfg.JS, sdjs.FollowConfig{
		StartSeq: st.FirstSeq, BatchSize: cfg.BatchSize, Name: "gateway-rebuild", Logger: log,
		Undecodable: func(seq uint64, subject string, cause error) error {
			log.Warn().Err(cause).Uint64("seq", seq).Str("subject", subject).Msg("skipping a message the view cannot read")
			return nil
		},
	}, func(batch []*events.Envelope, pending uint64) error {
		// Events appended since the rebuild started are left to the
		// projection that follows it.
		n := len(batch)
		for n > 0 && batch[n-1].Seq > target {
			n--
		}
		if n > 0 {
			if err := applyBatch(cfg.View, batch[:n], pending); err != nil {
				return errApply{err}
			}
		}
		applied := cfg.View.AppliedSeq()
		if now := time.Now(); now.Sub(lastLog) >= every {
			rate := float64(applied-lastSeq) / now.Sub(lastLog).Seconds()
			log.Info().Uint64("applied", applied).Uint64("target", target).
				Str("done", fmt.Sprintf("%.1f%%", 100*float64(applied)/float64(target))).
				Int("events_per_second", int(rate)).Msg("rebuilding the view")
			lastLog, lastSeq = now, applied
		}
		if applied >= target || n < len(batch) {
			return errRebuilt
		}
		return nil
	})
	var ae errApply
	switch {
	case errors.Is(err, errRebuilt):
	case errors.As(err, &ae):
		return 0, fmt.Errorf("rebuild view: %w", ae.err)
	case ctx.Err() != nil:
		return 0, fmt.Errorf("rebuild view: interrupted at %d of %d: %w", cfg.View.AppliedSeq(), target, ctx.Err())
	case err != nil:
		return 0, fmt.Errorf("rebuild view: %w", err)
	default:
		return 0, fmt.Errorf("rebuild view: the log ended at %d before %d: %w", cfg.View.AppliedSeq(), target, errdefs.ErrUnavailable)
	}
	took := time.Since(start)
	applied := cfg.View.AppliedSeq()
	log.Info().Uint64("applied", applied).Dur("took", took).
		Int("events_per_second", int(float64(applied-st.FirstSeq+1)/took.Seconds())).Msg("view rebuilt")
	return applied, nil
}
