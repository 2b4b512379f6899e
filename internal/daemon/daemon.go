// Package daemon holds what every Stevedore worker process shares: logging
// setup, signal handling, connecting to NATS, and ready files that scripts
// wait on.
package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// DefaultRoot is the default state root.
const DefaultRoot = "/var/lib/stevedore"

// DefaultNATS is the URL workers use when none is given: the gateway's
// embedded server on this machine.
const DefaultNATS = "nats://127.0.0.1:4222"

// Env returns the environment variable key, or def when it is unset.
func Env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// Logger returns a zerolog logger for component at level ("debug", "info",
// …) in format "json" or "console".
func Logger(w io.Writer, component, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log level %q: %w", level, err)
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("component", component).Logger(), nil
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Connect connects to NATS at url, waiting for it to come up (the gateway
// with the embedded server may start after a worker) until ctx ends, and
// reconnecting for ever after.
func Connect(ctx context.Context, url, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats reconnected") }),
	}
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		log.Info().Err(err).Str("url", redact(url)).Msg("waiting for nats")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats at %s: %w", redact(url), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// redact drops credentials from a URL for logs.
func redact(url string) string {
	if i := strings.Index(url, "@"); i >= 0 {
		if j := strings.Index(url, "://"); j >= 0 && j < i {
			return url[:j+3] + "***@" + url[i+1:]
		}
	}
	return url
}

// ReadyFile writes path (creating its directory) to tell scripts the
// process is ready, and returns a func that removes it.
func ReadyFile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("ready file: %w", err)
	}
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
		return nil, fmt.Errorf("ready file: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}

// Hostname returns the node name default: the host name.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	return strings.ReplaceAll(h, ".", "-")
}
