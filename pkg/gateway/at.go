package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/view"
)

// viewAtSlots bounds how many view-at replays run at once in this process:
// each one reads the log from its start into its own in-memory view.
var viewAtSlots = make(chan struct{}, 2)

// maxViewAtEvents is api.MaxViewAtEvents; tests lower it.
var maxViewAtEvents uint64 = api.MaxViewAtEvents

// errReplayed ends a view-at replay from inside its Follow callback.
var errReplayed = errors.New("replayed up to the requested point")

// viewAt answers an api.ViewAtRequest: it replays the log from its first
// event up to the requested point into a fresh in-memory view and answers
// from it. The gateway's own view is not touched. The replay is bounded by
// api.MaxViewAtEvents and by the request's context.
func (g *Gateway) viewAt(ctx context.Context, req micro.Request) (any, error) {
	var r api.ViewAtRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	switch r.What {
	case api.ViewAtImages, api.ViewAtContainers:
	default:
		return nil, fmt.Errorf("view at: what %q: want %q or %q: %w", r.What, api.ViewAtImages, api.ViewAtContainers, errdefs.ErrInvalidArgument)
	}
	switch {
	case r.AtSeq != 0 && r.AtTime != nil:
		return nil, fmt.Errorf("view at: give a sequence or a time, not both: %w", errdefs.ErrInvalidArgument)
	case r.AtSeq == 0 && r.AtTime == nil:
		return nil, fmt.Errorf("view at: no point of the log given: want at_seq (1 or more) or at_time: %w", errdefs.ErrInvalidArgument)
	case r.AtTime != nil && r.AtTime.IsZero():
		return nil, fmt.Errorf("view at: at_time is the zero time: %w", errdefs.ErrInvalidArgument)
	}

	select {
	case viewAtSlots <- struct{}{}:
		defer func() { <-viewAtSlots }()
	case <-ctx.Done():
		return nil, fmt.Errorf("view at: too many replays at once; retry: %w", errdefs.ErrUnavailable)
	}

	first, last, err := g.logBounds(ctx)
	if err != nil {
		return nil, err
	}
	bound := last
	if r.AtSeq != 0 {
		if r.AtSeq > last {
			return nil, fmt.Errorf("view at: sequence %d is beyond the end of the log (its last event is %d): %w", r.AtSeq, last, errdefs.ErrInvalidArgument)
		}
		if r.AtSeq < first {
			return nil, fmt.Errorf("view at: sequence %d has aged out of the log (its first event is %d): %w", r.AtSeq, first, errdefs.ErrFailedPrecondition)
		}
		bound = r.AtSeq
	}
	reply := api.ViewAtReply{FirstSeq: first}
	if bound != 0 && bound >= first {
		if n := bound - first + 1; n > maxViewAtEvents {
			return nil, fmt.Errorf("view at: the replay would read %d events, more than the %d allowed; ask for an earlier point: %w",
				n, maxViewAtEvents, errdefs.ErrResourceExhausted)
		}
	}

	v, err := view.Open("", view.InMemory())
	if err != nil {
		return nil, fmt.Errorf("view at: open a view: %w: %w", err, errdefs.ErrInternal)
	}
	defer func() { _ = v.Close() }()

	if bound != 0 && bound >= first {
		if err := g.replay(ctx, v, bound, r.AtTime, &reply); err != nil {
			return nil, err
		}
	}

	switch r.What {
	case api.ViewAtImages:
		if reply.Images, err = v.Images(ns); err != nil {
			return nil, fmt.Errorf("view at: list images: %w", err)
		}
		if reply.Images == nil {
			reply.Images = []api.Image{}
		}
	case api.ViewAtContainers:
		if reply.Containers, err = v.Containers(ns); err != nil {
			return nil, fmt.Errorf("view at: list containers: %w", err)
		}
	}
	return reply, nil
}

// replay applies the log to v in order, from its first event up to and
// including sequence bound, stopping before the first event whose time is
// after at (if at is set). It records what it applied in reply.
func (g *Gateway) replay(ctx context.Context, v *view.View, bound uint64, at *time.Time, reply *api.ViewAtReply) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := false
	apply := func(ev *events.Envelope) error {
		if ev.Seq > bound || (at != nil && ev.Type != "" && ev.Time.After(*at)) {
			done = true
			return errReplayed
		}
		reply.Replayed++
		if err := v.Apply(ev); err != nil {
			return errApply{err}
		}
		reply.Seq = ev.Seq
		if ev.Type != "" {
			reply.Time = ev.Time.UTC()
		}
		if ev.Seq >= bound {
			done = true
			return errReplayed
		}
		return nil
	}
	err := sdjs.Follow(rctx, g.cfg.JS, sdjs.FollowConfig{
		// A message that is not an event only advances the watermark, as
		// in the gateway's own projection.
		Undecodable: func(seq uint64, _ string, _ error) error { return apply(&events.Envelope{Seq: seq}) },
	}, apply)
	var ae errApply
	switch {
	case done:
		return nil
	case errors.As(err, &ae):
		return fmt.Errorf("view at: apply the log: %w: %w", ae.err, errdefs.ErrInternal)
	case ctx.Err() != nil:
		return fmt.Errorf("view at: the replay did not reach sequence %d in time (it read %d events): %w: %w",
			bound, reply.Replayed, errdefs.ErrUnavailable, ctx.Err())
	case err != nil:
		return fmt.Errorf("view at: read the log: %w: %w", err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("view at: the event log ended before sequence %d: %w", bound, errdefs.ErrUnavailable)
}

// logBounds returns the first and last sequence in the events log.
func (g *Gateway) logBounds(ctx context.Context) (first, last uint64, err error) {
	s, err := g.cfg.JS.Stream(ctx, events.EventsStream)
	if err != nil {
		return 0, 0, fmt.Errorf("view at: events stream: %w: %w", err, errdefs.ErrUnavailable)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("view at: events stream info: %w: %w", err, errdefs.ErrUnavailable)
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}
