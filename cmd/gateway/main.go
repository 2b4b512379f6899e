// Command gateway is Stevedore's API front: it embeds a NATS server with
// JetStream (unless --nats points at an external one), provisions the event
// log, serves the request/reply API that ctl talks to, and keeps the Pebble
// view of images, content and operations as a projection of the log.
package main

import (
	"context"
	"errors"
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
	"github.com/stevedore/stevedore/pkg/errdefs"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/gateway"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/natsserver"
	"github.com/stevedore/stevedore/pkg/view"
)

type config struct {
	root       string
	natsURL    string
	listen     string
	node       string
	logLevel   string
	logFormat  string
	readyFile  string
	maxAge     time.Duration
	maxBytes   int64
	platform   string
	metrics    string
	pprof      bool
	metricsSet bool // --metrics was given
	rebuild    bool
	partial    bool
}

func main() {
	var c config
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	fs.StringVar(&c.root, "root", daemon.Env("STEVEDORE_ROOT", daemon.DefaultRoot), "state root: embedded NATS store, view and content live under it (env STEVEDORE_ROOT)")
	fs.StringVar(&c.natsURL, "nats", os.Getenv("STEVEDORE_NATS_EXTERNAL"), "URL of an external NATS server with JetStream; empty runs an embedded one (env STEVEDORE_NATS_EXTERNAL)")
	fs.StringVar(&c.listen, "listen", daemon.Env("STEVEDORE_NATS_LISTEN", "127.0.0.1:4222"), "address the embedded NATS server listens on (env STEVEDORE_NATS_LISTEN)")
	fs.StringVar(&c.node, "node", daemon.Env("STEVEDORE_NODE", daemon.Hostname()), "this node's name (env STEVEDORE_NODE)")
	fs.StringVar(&c.logLevel, "log-level", daemon.Env("STEVEDORE_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&c.readyFile, "ready-file", "", "file written with the pid once the gateway serves requests")
	fs.DurationVar(&c.maxAge, "log-max-age", 0, "age after which events leave the log; 0 keeps them forever")
	fs.Int64Var(&c.maxBytes, "log-max-bytes", 0, "size cap of the event log in bytes; 0 for none")
	fs.StringVar(&c.platform, "platform", "", "default platform for pulls (os/arch[/variant]); empty for this host's")
	fs.StringVar(&c.metrics, "metrics", daemon.Env("STEVEDORE_GATEWAY_METRICS", "127.0.0.1:9450"), "address to serve Prometheus metrics on at /metrics; empty for none (env STEVEDORE_GATEWAY_METRICS)")
	fs.BoolVar(&c.pprof, "pprof", false, profiling.FlagUsage)
	fs.BoolVar(&c.rebuild, "rebuild-view", false, "rebuild the view from the whole event log into a fresh directory, swap it in, then serve")
	fs.BoolVar(&c.partial, "allow-partial-rebuild", false, "with --rebuild-view, rebuild even if old events have aged out of the log (the view then lacks their facts; see docs/log-retention.md)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway [flags]\n\nRuns Stevedore's gateway: the API ctl talks to, the event log and the view.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	_, c.metricsSet = os.LookupEnv("STEVEDORE_GATEWAY_METRICS")
	fs.Visit(func(f *flag.Flag) { c.metricsSet = c.metricsSet || f.Name == "metrics" })

	log, err := daemon.Logger(os.Stderr, "gateway", c.logLevel, c.logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	}
	ctx, cancel := daemon.SignalContext()
	defer cancel()
	if err := run(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("gateway stopped")
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config, log zerolog.Logger) error {
	if err := os.MkdirAll(c.root, 0o711); err != nil {
		return fmt.Errorf("state root: %w", err)
	}
	if c.maxAge != 0 && c.maxAge < 100*time.Millisecond {
		// JetStream's floor; a raw server error would not name the flag.
		return fmt.Errorf("--log-max-age %v: must be 0 (keep events forever) or at least 100ms: %w", c.maxAge, errdefs.ErrInvalidArgument)
	}
	if c.maxBytes < 0 {
		return fmt.Errorf("--log-max-bytes %d: must be 0 (no cap) or positive: %w", c.maxBytes, errdefs.ErrInvalidArgument)
	}
	platform := c.platform
	if platform == "" {
		platform = images.DefaultPlatform().String()
	} else if _, err := images.ParsePlatform(platform); err != nil {
		return err
	}

	sdjs.SetObserver(metrics.JetStream{})
	if err := profiling.Check(c.pprof, c.metrics); err != nil {
		return err
	}
	_, stopMetrics, err := metrics.Serve(c.metrics, log, profiling.Routes(c.pprof)...)
	switch {
	case err != nil && c.metricsSet:
		return err
	case err != nil:
		// The default address is taken (another gateway on this
		// machine?): serve without metrics rather than not at all.
		log.Warn().Err(err).Msg("not serving metrics; pass --metrics ADDR to choose another address")
	default:
		defer stopMetrics()
	}

	url := c.natsURL
	if url == "" {
		srv, err := natsserver.Start(natsserver.Config{Listen: c.listen, StoreDir: filepath.Join(c.root, "nats"), ServerName: c.node})
		if err != nil {
			return err
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		url = srv.ClientURL()
		log.Info().Str("url", url).Msg("embedded nats started")
	}
	nc, err := daemon.Connect(ctx, url, "stevedore-gateway", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := sdjs.EnsureStream(ctx, js, sdjs.StreamConfig{MaxAge: c.maxAge, MaxBytes: c.maxBytes}); err != nil {
		return err
	}
	store, err := local.New(filepath.Join(c.root, "content"))
	if err != nil {
		return err
	}
	viewDir := filepath.Join(c.root, "view")
	fresh := viewDir + ".rebuild"
	if err := os.RemoveAll(fresh); err != nil { // left by an interrupted rebuild
		return fmt.Errorf("remove %s: %w", fresh, err)
	}
	if c.rebuild {
		if err := rebuildView(ctx, js, viewDir, fresh, c.partial, log); err != nil {
			return err
		}
	} else if c.partial {
		return errors.New("--allow-partial-rebuild is for --rebuild-view")
	}
	v, err := view.Open(viewDir, view.WithLogger(log))
	if err != nil {
		return err
	}
	defer v.Close()

	gw, err := gateway.New(gateway.Config{
		Conn: nc, JS: js, Publisher: sdjs.NewPublisher(js), View: v, Content: store,
		Node: c.node, DefaultPlatform: platform, Logger: log,
	})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- gw.Run(ctx) }()
	// Announce readiness once every endpoint is served; fail fast if Run
	// fails first.
	select {
	case err := <-errc:
		return err
	case <-gw.Ready():
	}
	removeReady, err := daemon.ReadyFile(c.readyFile)
	if err != nil {
		return err
	}
	defer removeReady()
	log.Info().Str("root", c.root).Str("node", c.node).Str("nats", url).Msg("gateway ready")
	err = <-errc
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// rebuildView builds a view from the whole log in fresh, aside from the
// view in use, and swaps it in once it is complete. An interrupted rebuild
// leaves the old view in place.
func rebuildView(ctx context.Context, js jetstream.JetStream, viewDir, fresh string, partial bool, log zerolog.Logger) error {
	v, err := view.Open(fresh, view.WithLogger(log))
	if err != nil {
		return err
	}
	seq, err := gateway.Rebuild(ctx, gateway.RebuildConfig{JS: js, View: v, AllowPartial: partial, Logger: log})
	if cerr := v.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.RemoveAll(fresh)
		return err
	}
	if err := view.Replace(viewDir, fresh); err != nil {
		return err
	}
	log.Info().Uint64("applied", seq).Str("view", viewDir).Msg("rebuilt view swapped in")
	return nil
}
