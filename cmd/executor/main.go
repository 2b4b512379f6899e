// Command executor is a Stevedore execution worker, one per node: it turns
// container requests into rootfs snapshots, OCI bundles and runc tasks,
// records their lifecycle, and serves their logs. Each task is held by a
// small monitor process (this binary run as "executor monitor"), so the
// executor can crash or be upgraded without killing tasks or losing their
// exit codes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/daemon"
	"github.com/stevedore/stevedore/internal/daemon/profiling"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/nodesvc"
	"github.com/stevedore/stevedore/pkg/runtime/runc"
)

type config struct {
	root        string
	natsURL     string
	node        string
	logLevel    string
	logFormat   string
	readyFile   string
	runcBin     string
	runcRoot    string
	ackWait     time.Duration
	maxAttempts int
	metrics     string
	pprof       bool
}

func main() {
	// A task's monitor is this binary re-executed; it must not parse the
	// executor's flags.
	if len(os.Args) > 1 && os.Args[1] == "monitor" {
		os.Exit(runc.MonitorMain(os.Args[2:]))
	}
	var c config
	fs := flag.NewFlagSet("executor", flag.ExitOnError)
	fs.StringVar(&c.root, "root", daemon.Env("STEVEDORE_ROOT", daemon.DefaultRoot), "state root: bundles in <root>/bundles, task state in <root>/tasks (env STEVEDORE_ROOT)")
	fs.StringVar(&c.natsURL, "nats", daemon.Env("STEVEDORE_NATS", daemon.DefaultNATS), "NATS URL (env STEVEDORE_NATS)")
	fs.StringVar(&c.node, "node", daemon.Env("STEVEDORE_NODE", daemon.Hostname()), "this node's name (env STEVEDORE_NODE)")
	fs.StringVar(&c.logLevel, "log-level", daemon.Env("STEVEDORE_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&c.readyFile, "ready-file", "", "file written with the pid once the executor consumes work")
	fs.StringVar(&c.metrics, "metrics", "", "address to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9453; empty for none")
	fs.BoolVar(&c.pprof, "pprof", false, profiling.FlagUsage)
	fs.StringVar(&c.runcBin, "runc", daemon.Env("STEVEDORE_RUNC", "runc"), "runc binary")
	fs.StringVar(&c.runcRoot, "runc-root", "", "runc's state root (default /run/stevedore/runc)")
	fs.DurationVar(&c.ackWait, "ack-wait", 15*time.Second, "how long work held by a dead executor waits before it is redelivered")
	fs.IntVar(&c.maxAttempts, "max-attempts", 5, "deliveries of one request before it is recorded as failed")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: executor [flags]\n\nRuns a Stevedore execution worker (one per node).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])

	log, err := daemon.Logger(os.Stderr, "executor", c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "executor:", err)
		os.Exit(2)
	}
	ctx, cancel := daemon.SignalContext()
	defer cancel()
	if err := run(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("executor stopped")
		fmt.Fprintln(os.Stderr, "executor:", err)
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
	stateRoot := filepath.Join(c.root, "tasks")
	if err := os.MkdirAll(stateRoot, 0o711); err != nil {
		return fmt.Errorf("task state root: %w", err)
	}
	rt, err := runc.New(runc.Config{Runc: c.runcBin, Root: c.runcRoot, StateRoot: stateRoot})
	if err != nil {
		return err
	}
	defer rt.Close()
	store, err := local.New(filepath.Join(c.root, "content"))
	if err != nil {
		return err
	}
	nc, err := daemon.Connect(ctx, c.natsURL, "stevedore-executor", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	e := &handlers.Executor{
		Node: c.node, Store: store, Runtime: rt, Pub: sdjs.NewPublisher(js),
		Snapshots: &nodesvc.Client{Conn: nc, Node: c.node, Actor: "executor"},
		LastEvent: func(ctx context.Context, filter string) (*events.Envelope, error) {
			return sdjs.LastFor(ctx, js, filter)
		},
		BundleRoot: filepath.Join(c.root, "bundles"), StateRoot: stateRoot,
		NATSURL: nc.ConnectedUrl(), Log: log,
	}
	e.Start(ctx)
	defer e.WaitBackground()
	cfg := sdjs.ConsumerConfig{
		// One executor per node: the durable is the node's.
		Durable: events.WorkerDurable("executor", c.node), Filters: e.Filters(), Concurrency: 16,
		AckWait: c.ackWait, MaxAttempts: c.maxAttempts, OnFailure: e.OnFailure, Logger: log,
	}
	// The stream is the gateway's to create: wait for it.
	if err := sdjs.AwaitConsumer(ctx, js, cfg); err != nil {
		return err
	}
	if err := e.Reconcile(ctx); err != nil {
		return err
	}
	svc, err := nodesvc.StartLogs(nodesvc.LogsConfig{Conn: nc, Node: c.node, StateRoot: stateRoot, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	removeReady, err := daemon.ReadyFile(c.readyFile)
	if err != nil {
		return err
	}
	defer removeReady()
	log.Info().Msg("executor ready")
	return sdjs.Consume(ctx, js, cfg, e)
}
