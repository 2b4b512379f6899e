// Command unpacker is a Stevedore unpack worker, one per node: it applies
// committed layers into the node's snapshots (overlay where the kernel
// supports it, else native copies), in parallel and as each blob lands,
// records layer-applied and image-unpacked, and serves the node's
// snapshots (list, mounts, remove) to ctl.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/daemon"
	"github.com/stevedore/stevedore/internal/daemon/profiling"
	"github.com/stevedore/stevedore/pkg/archive"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/nodesvc"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/native"
	"github.com/stevedore/stevedore/pkg/snapshots/overlay"
)

type config struct {
	root        string
	natsURL     string
	node        string
	logLevel    string
	logFormat   string
	readyFile   string
	snapshotter string
	parallel    int
	maxLayer    int64
	ackWait     time.Duration
	maxAttempts int
	metrics     string
	pprof       bool
}

func main() {
	var c config
	fs := flag.NewFlagSet("unpacker", flag.ExitOnError)
	fs.StringVar(&c.root, "root", daemon.Env("STEVEDORE_ROOT", daemon.DefaultRoot), "state root; snapshots live in <root>/snapshots/<snapshotter> (env STEVEDORE_ROOT)")
	fs.StringVar(&c.natsURL, "nats", daemon.Env("STEVEDORE_NATS", daemon.DefaultNATS), "NATS URL (env STEVEDORE_NATS)")
	fs.StringVar(&c.node, "node", daemon.Env("STEVEDORE_NODE", daemon.Hostname()), "this node's name (env STEVEDORE_NODE)")
	fs.StringVar(&c.logLevel, "log-level", daemon.Env("STEVEDORE_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&c.readyFile, "ready-file", "", "file written with the pid once the unpacker consumes work")
	fs.StringVar(&c.metrics, "metrics", "", "address to serve Prometheus metrics on at /metrics, e.g. 127.0.0.1:9452; empty for none")
	fs.BoolVar(&c.pprof, "pprof", false, profiling.FlagUsage)
	fs.StringVar(&c.snapshotter, "snapshotter", daemon.Env("STEVEDORE_SNAPSHOTTER", "auto"), "overlay, native, or auto (overlay where it works)")
	fs.IntVar(&c.parallel, "parallel", runtime.NumCPU(), "layers applied at once")
	fs.Int64Var(&c.maxLayer, "max-layer-size", 64<<30, "largest uncompressed layer accepted, in bytes (bounds decompression bombs)")
	fs.DurationVar(&c.ackWait, "ack-wait", 15*time.Second, "how long work held by a dead unpacker waits before it is redelivered")
	fs.IntVar(&c.maxAttempts, "max-attempts", 5, "deliveries of one unit of work before the pull fails")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: unpacker [flags]\n\nRuns a Stevedore unpack worker (one per node).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])

	log, err := daemon.Logger(os.Stderr, "unpacker", c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unpacker:", err)
		os.Exit(2)
	}
	ctx, cancel := daemon.SignalContext()
	defer cancel()
	if err := run(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("unpacker stopped")
		fmt.Fprintln(os.Stderr, "unpacker:", err)
		os.Exit(1)
	}
}

// openSnapshotter picks and opens the node's snapshotter.
func openSnapshotter(c config, log zerolog.Logger) (snapshots.Snapshotter, string, archive.Mode, error) {
	name := c.snapshotter
	base := filepath.Join(c.root, "snapshots")
	if err := os.MkdirAll(base, 0o711); err != nil {
		return nil, "", 0, fmt.Errorf("snapshots root: %w", err)
	}
	if name == "auto" {
		name = "overlay"
		if err := snapshots.OverlaySupported(base); err != nil {
			log.Warn().Err(err).Msg("overlayfs unavailable; using native (copying) snapshots")
			name = "native"
		}
	}
	switch name {
	case "overlay":
		s, err := overlay.New(filepath.Join(base, "overlay"), overlay.WithLogger(log))
		return s, name, archive.OverlayForm, err
	case "native":
		s, err := native.New(filepath.Join(base, "native"))
		return s, name, archive.Direct, err
	}
	return nil, "", 0, fmt.Errorf("--snapshotter %q: want overlay, native or auto", name)
}

// applier adapts pkg/archive to the unpacker's LayerApplier.
type applier struct {
	mode    archive.Mode
	maxSize int64
}

func (a applier) ApplyLayer(ctx context.Context, dir string, r io.Reader, diffID digest.Digest, lowers []string) (int64, error) {
	res, err := archive.Apply(ctx, dir, r, archive.Options{Mode: a.mode, DiffID: diffID, MaxSize: a.maxSize, Lowers: lowers})
	if err != nil {
		return 0, err
	}
	return res.Size, nil
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
	sn, name, mode, err := openSnapshotter(c, log)
	if err != nil {
		return err
	}
	defer sn.Close()
	nc, err := daemon.Connect(ctx, c.natsURL, "stevedore-unpacker", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	pub := sdjs.NewPublisher(js)
	u := &handlers.Unpacker{
		Store: store, Snapshotter: sn, Applier: applier{mode: mode, maxSize: c.maxLayer}, Pub: pub,
		SnapshotterName: name, Node: c.node, Parallel: c.parallel, Log: log,
	}
	cfg := sdjs.ConsumerConfig{
		// One unpacker per node: the durable is the node's.
		Durable: events.WorkerDurable("unpacker", c.node), Filters: u.Filters(),
		// Handlers wait for configs and parents without holding an apply
		// slot, so take more events than layers applied at once.
		Concurrency: 4*c.parallel + 4,
		AckWait:     c.ackWait, MaxAttempts: c.maxAttempts, OnFailure: u.OnFailure, Logger: log,
	}
	// The stream is the gateway's to create: wait for it.
	if err := sdjs.AwaitConsumer(ctx, js, cfg); err != nil {
		return err
	}
	svc, err := nodesvc.Start(nodesvc.Config{Conn: nc, Snapshotter: sn, Name: name, Publisher: pub, Node: c.node, Logger: log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	removeReady, err := daemon.ReadyFile(c.readyFile)
	if err != nil {
		return err
	}
	defer removeReady()
	log.Info().Str("snapshotter", name).Int("parallel", c.parallel).Msg("unpacker ready")
	return sdjs.Consume(ctx, js, cfg, u)
}
