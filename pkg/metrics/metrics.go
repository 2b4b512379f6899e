// Package metrics holds the Prometheus metrics every Stevedore process
// exposes and serves them over HTTP at /metrics.
//
// Metrics are process-wide: a process serves the ones its parts observe
// (the log adapter's in every process, the fetcher's in fetchers, the
// projection's in the gateway), plus the Go runtime and process collectors.
// Counters count what this process did since it started; a handler that is
// redelivered after a crash may count a fact twice, while the log records
// it once. The catalogue is in README.md ("Metrics").
//
// Observing is cheap and always on; serving is what --metrics turns on.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// Registry holds every metric below and, once Handler or Serve was
// called, the Go and process collectors.
var Registry = prometheus.NewRegistry()

var factory = promauto.With(Registry)

// registerRuntime adds the Go and process collectors. They are added when
// metrics are first served, not at init: building the Go collector costs
// about 1.5 ms, which every short-lived client (ctl) would otherwise pay.
var registerRuntime = sync.OnceFunc(func() {
	Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
})

// Buckets for durations from a millisecond (a small handler) to minutes (a
// large layer).
var durationBuckets = prometheus.ExponentialBuckets(0.001, 4, 10) // 1ms … 262s

// The event log, observed by the JetStream adapter in every process.
var (
	EventsPublished = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_events_published_total",
		Help: "Events this process appended to the log (deduplicated retries included), by type.",
	}, []string{"type"})
	HandlerDuration = factory.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "stevedore_handler_duration_seconds",
		Help:    "Time a consumer's handler took for one delivery, by consumer, event type and outcome (ok, retry, failed, shutdown).",
		Buckets: durationBuckets,
	}, []string{"consumer", "type", "outcome"})
	Redeliveries = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_redeliveries_total",
		Help: "Deliveries that were not an event's first (attempt > 1), by consumer and event type.",
	}, []string{"consumer", "type"})
	FailuresRecorded = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_failures_recorded_total",
		Help: "Events whose handling was given up and recorded as a failure event, by consumer and event type.",
	}, []string{"consumer", "type"})
	EventsSkipped = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_events_skipped_total",
		Help: "Messages a consumer or follower skipped, by reader and reason (undecodable, newer-schema).",
	}, []string{"reader", "reason"})
	ConsumerPending = factory.NewGaugeVec(prometheus.GaugeOpts{
		Name: "stevedore_consumer_pending_events",
		Help: "Events matching a durable consumer not yet delivered (its num_pending), sampled every few seconds.",
	}, []string{"consumer"})
	ConsumerAckPending = factory.NewGaugeVec(prometheus.GaugeOpts{
		Name: "stevedore_consumer_ack_pending_events",
		Help: "Events delivered to a durable consumer and not yet acknowledged (its num_ack_pending), sampled every few seconds.",
	}, []string{"consumer"})
)

// Pulls, fetches, unpacks and tasks, observed by the workers (and the
// gateway, for requests).
var (
	PullsRequested = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_pulls_requested_total",
		Help: "Pulls this gateway recorded as requested.",
	})
	PullsCompleted = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_pulls_completed_total",
		Help: "Pulls this worker recorded as completed.",
	})
	PullsFailed = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_pulls_failed_total",
		Help: "Pulls this worker recorded as failed.",
	})
	BytesFetched = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_fetched_bytes_total",
		Help: "Bytes downloaded from registries into the content store.",
	})
	BlobsCommitted = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_blobs_committed_total",
		Help: "Blobs recorded as committed, by whether they were already in the store (existing).",
	}, []string{"existing"})
	LayersApplied = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_layers_applied_total",
		Help: "Layers recorded as applied into snapshots, by whether the snapshot was already there (existing).",
	}, []string{"existing"})
	LayerBytes = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_layer_applied_bytes_total",
		Help: "Uncompressed bytes of the layers this unpacker applied.",
	})
	LayerDuration = factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "stevedore_layer_apply_duration_seconds",
		Help:    "Time to apply one layer that was not already there.",
		Buckets: durationBuckets,
	})
	TasksStarted = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_tasks_started_total",
		Help: "Tasks this executor recorded as started.",
	})
	TasksExited = factory.NewCounterVec(prometheus.CounterOpts{
		Name: "stevedore_tasks_exited_total",
		Help: "Tasks this executor recorded as exited, by exit class (ok, error, cannot-run, signal, oom).",
	}, []string{"class"})
)

// The gateway's projection of the log into its view.
var (
	ProjectionApplied = factory.NewGauge(prometheus.GaugeOpts{
		Name: "stevedore_projection_applied_sequence",
		Help: "The log sequence the gateway's view has applied.",
	})
	ProjectionLag = factory.NewGauge(prometheus.GaugeOpts{
		Name: "stevedore_projection_lag_events",
		Help: "Events in the log after the view's applied sequence, as of the last batch.",
	})
	ProjectionEvents = factory.NewCounter(prometheus.CounterOpts{
		Name: "stevedore_projection_events_total",
		Help: "Events the view applied (including skipped ones, which only advance its watermark).",
	})
	ProjectionBatch = factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "stevedore_projection_batch_events",
		Help:    "Events per view commit (one Pebble batch, one sync).",
		Buckets: prometheus.ExponentialBuckets(1, 4, 8), // 1 … 16384
	})
	ProjectionCommit = factory.NewHistogram(prometheus.HistogramOpts{
		Name:    "stevedore_projection_commit_duration_seconds",
		Help:    "Time to project and commit one batch into the view.",
		Buckets: durationBuckets,
	})
)

// Exit classes of a task.
const (
	ExitOK        = "ok"         // code 0
	ExitError     = "error"      // codes 1–125: the program said it failed
	ExitCannotRun = "cannot-run" // 126, 127: not executable, not found
	ExitSignal    = "signal"     // ended by a signal (code above 128)
	ExitOOM       = "oom"        // killed for memory
)

// ExitClass classifies a task's exit for TasksExited.
func ExitClass(code int, signal string, oom bool) string {
	switch {
	case oom:
		return ExitOOM
	case signal != "" || code > 128:
		return ExitSignal
	case code == 0:
		return ExitOK
	case code == 126 || code == 127:
		return ExitCannotRun
	}
	return ExitError
}

// Bool is a label value for a bool.
func Bool(b bool) string { return strconv.FormatBool(b) }

// Handler serves the registry in the Prometheus exposition format.
func Handler() http.Handler {
	registerRuntime()
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{Registry: Registry})
}

// Route is a handler Serve serves beside /metrics.
type Route struct {
	Pattern string // as for http.ServeMux
	Handler http.Handler
}

// Serve serves /metrics, and extra, on addr until the returned stop func is
// called; an empty addr serves nothing. It returns once it listens, with
// the address it listens on (addr may have port 0).
func Serve(addr string, log zerolog.Logger, extra ...Route) (string, func(), error) {
	if addr == "" {
		return "", func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler())
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics server stopped")
		}
	}()
	log.Info().Str("addr", l.Addr().String()).Msg("serving metrics at /metrics")
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return l.Addr().String(), stop, nil
}

// Value returns a counter's or gauge's current value, or a histogram's
// sample count: for tests and diagnostics.
func Value(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return 0
	}
	switch {
	case pb.Counter != nil:
		return pb.Counter.GetValue()
	case pb.Gauge != nil:
		return pb.Gauge.GetValue()
	case pb.Histogram != nil:
		return float64(pb.Histogram.GetSampleCount())
	}
	return 0
}

// JetStream counts what the event log adapter reports (it implements
// pkg/events/jetstream.Observer): install it in a daemon with
// sdjs.SetObserver(metrics.JetStream{}).
type JetStream struct{}

// Published counts an appended event.
func (JetStream) Published(t string) { EventsPublished.WithLabelValues(t).Inc() }

// Skipped counts a message a reader skipped.
func (JetStream) Skipped(reader, reason string) { EventsSkipped.WithLabelValues(reader, reason).Inc() }

// Redelivered counts a delivery that was not an event's first.
func (JetStream) Redelivered(consumer, t string) { Redeliveries.WithLabelValues(consumer, t).Inc() }

// Handled observes a handler's duration.
func (JetStream) Handled(consumer, t, outcome string, took time.Duration) {
	HandlerDuration.WithLabelValues(consumer, t, outcome).Observe(took.Seconds())
}

// FailureRecorded counts an event given up on.
func (JetStream) FailureRecorded(consumer, t string) {
	FailuresRecorded.WithLabelValues(consumer, t).Inc()
}

// ConsumerLag sets a durable consumer's pending gauges.
func (JetStream) ConsumerLag(consumer string, pending, ackPending uint64) {
	ConsumerPending.WithLabelValues(consumer).Set(float64(pending))
	ConsumerAckPending.WithLabelValues(consumer).Set(float64(ackPending))
}
