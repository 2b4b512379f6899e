package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// Requests that no worker would ever take up fail at once with a message
// that says what is missing, instead of leaving the client waiting.

// fetchersAlive reports whether any fetcher is consuming: an idle fetcher
// keeps a pull request waiting on the shared consumer, a busy one holds
// unacknowledged work.
func (g *Gateway) fetchersAlive(ctx context.Context) error {
	c, err := g.cfg.JS.Consumer(ctx, events.EventsStream, events.WorkerDurable("fetcher", g.cfg.Node))
	if err != nil {
		return fmt.Errorf("no fetcher has ever run on node %s (start the fetchers, e.g. make up): %w", g.cfg.Node, errdefs.ErrUnavailable)
	}
	// A fetcher renews its request for work every 30 s; look a few times
	// so that the instant between two requests does not count as absence.
	for try := 0; ; try++ {
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("fetcher consumer: %w: %w", err, errdefs.ErrUnavailable)
		}
		if info.NumWaiting > 0 || info.NumAckPending > 0 {
			return nil
		}
		if try == 3 {
			return fmt.Errorf("no fetcher is running on node %s (start the fetchers, e.g. make up): %w", g.cfg.Node, errdefs.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nodeWorkerAlive asks a node's worker service on subject; any answer, even
// an error reply, means it is there.
func (g *Gateway) nodeWorkerAlive(ctx context.Context, subject, what, node string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := g.cfg.Conn.RequestWithContext(ctx, subject, []byte("{}"))
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no %s is running on node %s (start it, e.g. make up): %w", what, node, errdefs.ErrUnavailable)
	}
	return nil
}

func (g *Gateway) unpackerAlive(ctx context.Context, node string) error {
	return g.nodeWorkerAlive(ctx, api.SnapshotsSubject(node, "mounts"), "unpacker", node)
}

func (g *Gateway) executorAlive(ctx context.Context, node string) error {
	return g.nodeWorkerAlive(ctx, api.TaskLogsSubject(node), "executor", node)
}
