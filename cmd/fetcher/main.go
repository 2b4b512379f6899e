// Command fetcher is a Stevedore fetch worker: it resolves references
// against OCI registries and fetches manifests, configs and layers into the
// node's content store. Any number of fetchers share one durable consumer,
// so adding fetchers adds throughput.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/daemon"
	"github.com/stevedore/stevedore/internal/daemon/profiling"
	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/remotes"
)

// fetcherService names the fetchers' micro service.
const fetcherService = "stevedore-fetcher"

type config struct {
	root        string
	natsURL     string
	node        string
	logLevel    string
	logFormat   string
	readyFile   string
	concurrency int
	ackWait     time.Duration
	maxAttempts int
	maxManifest int64
	maxConfig   int64
	maxDepth    int
	maxConns    int
	metrics     string
	pprof       bool
}

func main() {
	var c config
	fs := flag.NewFlagSet("fetcher", flag.ExitOnError)
	fs.StringVar(&c.root, "root", daemon.Env("STEVEDORE_ROOT", daemon.DefaultRoot), "state root; the content store is <root>/content (env STEVEDORE_ROOT)")
	fs.StringVar(&c.natsURL, "nats", daemon.Env("STEVEDORE_NATS", daemon.DefaultNATS), "NATS URL (env STEVEDORE_NATS)")
	fs.StringVar(&c.node, "node", daemon.Env("STEVEDORE_NODE", daemon.Hostname()), "this node's name (env STEVEDORE_NODE)")
	fs.StringVar(&c.logLevel, "log-level", daemon.Env("STEVEDORE_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&c.readyFile, "ready-file", "", "file written with the pid once the fetcher consumes work")
	fs.StringVar(&c.metrics, "metrics", "", "address to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9451; empty for none")
	fs.BoolVar(&c.pprof, "pprof", false, profiling.FlagUsage)
	fs.IntVar(&c.concurrency, "concurrency", 4, "blobs this process fetches at once")
	fs.DurationVar(&c.ackWait, "ack-wait", 15*time.Second, "how long work held by a dead fetcher waits before another takes it")
	fs.IntVar(&c.maxAttempts, "max-attempts", 5, "deliveries of one unit of work before the pull fails")
	fs.Int64Var(&c.maxManifest, "max-manifest-size", 4<<20, "largest manifest or index accepted, in bytes")
	fs.Int64Var(&c.maxConfig, "max-config-size", 8<<20, "largest image config accepted, in bytes")
	fs.IntVar(&c.maxDepth, "max-index-depth", 4, "deepest level below the reference's root at which a blob is accepted (a manifest's layers are at 1, an index's at 2; the default lets 3 indexes nest)")
	fs.IntVar(&c.maxConns, "max-conns-per-registry", 8, "concurrent connections to one registry from this process")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: fetcher [flags]\n\nRuns a Stevedore fetch worker.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])

	log, err := daemon.Logger(os.Stderr, "fetcher", c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fetcher:", err)
		os.Exit(2)
	}
	ctx, cancel := daemon.SignalContext()
	defer cancel()
	if err := run(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("fetcher stopped")
		fmt.Fprintln(os.Stderr, "fetcher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, log zerolog.Logger) error {
	if err := events.ValidateNode(c.node); err != nil {
		return fmt.Errorf("--node: %w", err)
	}
	log = log.With().Str("node", c.node).Int("pid", os.Getpid()).Logger()
	sdjs.SetObserver(metrics.JetStream{})
	if err := profiling.Check(c.pprof, c.metrics); err != nil {
		return err
	}
	_, stopMetrics, err := metrics.Serve(c.metrics, log, profiling.Routes(c.pprof)...)
	if err != nil {
		return err
	}
	defer stopMetrics()
	store, err := local.New(filepath.Join(c.root, "content"))
	if err != nil {
		return err
	}
	remote, err := remotes.New(
		remotes.WithMaxManifestSize(c.maxManifest),
		remotes.WithMaxConnsPerRegistry(c.maxConns),
	)
	if err != nil {
		return err
	}
	nc, err := daemon.Connect(ctx, c.natsURL, "stevedore-fetcher", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	f := &handlers.Fetcher{
		Remote:   remotes.StringRefs(remote),
		Store:    store,
		Pub:      sdjs.NewPublisher(js),
		Progress: sdjs.NewProgress(nc),
		Node:     c.node,
		Limits:   handlers.Limits{MaxManifestSize: c.maxManifest, MaxConfigSize: c.maxConfig, MaxDepth: c.maxDepth},
		Log:      log,
	}
	cfg := sdjs.ConsumerConfig{
		Durable: events.WorkerDurable("fetcher", c.node), Filters: f.Filters(), Concurrency: c.concurrency,
		AckWait: c.ackWait, MaxAttempts: c.maxAttempts, OnFailure: f.OnFailure, Logger: log,
	}
	// The stream is the gateway's to create: wait for it.
	if err := sdjs.AwaitConsumer(ctx, js, cfg); err != nil {
		return err
	}
	// A micro service with no endpoints: nats micro ls/info/stats list each
	// fetcher with its node.
	svc, err := micro.AddService(nc, micro.Config{
		Name:        fetcherService,
		Version:     api.ServiceVersion,
		Description: "Stevedore fetcher of node " + c.node,
		Metadata:    map[string]string{"node": c.node, "pid": strconv.Itoa(os.Getpid())},
	})
	if err != nil {
		return fmt.Errorf("fetcher service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	removeReady, err := daemon.ReadyFile(c.readyFile)
	if err != nil {
		return err
	}
	defer removeReady()
	log.Info().Int("concurrency", c.concurrency).Msg("fetcher ready")
	return sdjs.Consume(ctx, js, cfg, f)
}
