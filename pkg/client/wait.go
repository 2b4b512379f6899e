package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// Update is one thing that happened to an operation being waited on: an
// event from the log or a live progress tick. Exactly one field is set.
type Update struct {
	// Event is an event of the operation, read from the log.
	Event *events.Envelope
	// Progress is a live, unpersisted progress tick of a blob download.
	Progress *events.Progress
}

// progressBuffer is how many progress ticks may queue while fn runs; ticks
// beyond it are dropped (they are superseded by the next one anyway).
const progressBuffer = 256

// Wait follows operation op until it ends and returns its terminal event.
//
// It reads the client namespace's events from the log starting at op.Seq, so
// events appended before Wait was called are still seen, and keeps only those
// of op.Operation (whatever their aggregate: a pull's blob-committed,
// layer-applied and image-unpacked events are all its updates). It also
// listens for the operation's live progress ticks.
// If fn is not nil it is called with every event and tick, in the order they
// arrive, from one goroutine at a time.
//
// The terminal events are pull-completed, blob-deleted and image-deleted
// (Wait returns them with a nil error) and pull-failed and
// content-delete-failed (Wait returns them with an error that carries the
// event's message and wraps the errdefs class of its code). If ctx ends first
// Wait returns a nil envelope and an error wrapping ctx.Err(); the operation
// itself goes on.
func (c *Client) Wait(ctx context.Context, op api.OpReply, fn func(Update)) (*events.Envelope, error) {
	if op.Operation == "" {
		return nil, fmt.Errorf("wait: %w: no operation id", errdefs.ErrInvalidArgument)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	ticks := make(chan *nats.Msg, progressBuffer)
	if fn != nil {
		sub, err := c.nc.ChanSubscribe(events.ProgressSubject(op.Operation), ticks)
		if err != nil {
			return nil, fmt.Errorf("wait for operation %s: progress: %w", op.Operation, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}

	evs := make(chan *events.Envelope)
	followed := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		cfg := sdjs.FollowConfig{
			Filters:  []string{events.FilterSubject(c.ns, "", "", "")},
			StartSeq: op.Seq,
		}
		followed <- sdjs.Follow(ctx, c.js, cfg, func(ev *events.Envelope) error {
			if ev.Operation != op.Operation {
				return nil
			}
			select {
			case evs <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for operation %s: %w", op.Operation, ctx.Err())
		case err := <-followed:
			if err == nil {
				err = ctx.Err()
			}
			if err == nil {
				err = fmt.Errorf("%w: the event log ended", errdefs.ErrUnavailable)
			}
			return nil, fmt.Errorf("wait for operation %s: %w", op.Operation, err)
		case m := <-ticks:
			var p events.Progress
			if err := json.Unmarshal(m.Data, &p); err != nil {
				continue // a malformed tick is not worth failing the wait for
			}
			fn(Update{Progress: &p})
		case ev := <-evs:
			if fn != nil {
				fn(Update{Event: ev})
			}
			if done, err := Terminal(ev); done {
				return ev, err
			}
		}
	}
}

// Terminal reports whether ev ends its operation and, if it ends it in
// failure, returns the failure as an error carrying the event's message and
// wrapping the errdefs class of its code.
func Terminal(ev *events.Envelope) (bool, error) {
	switch ev.Type {
	case events.TypePullCompleted, events.TypeBlobDeleted, events.TypeImageDeleted:
		return true, nil
	case events.TypePullFailed:
		var p events.PullFailed
		if err := ev.Decode(&p); err != nil {
			return true, fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
		}
		return true, codeError(p.Code, p.Message)
	case events.TypeContentDeleteFailed:
		var p events.ContentDeleteFailed
		if err := ev.Decode(&p); err != nil {
			return true, fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
		}
		return true, codeError(p.Code, p.Message)
	}
	return false, nil
}
