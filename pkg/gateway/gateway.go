// Package gateway is the gateway process's core: the request/reply API that
// ctl and the client package talk to (a nats.go/micro service on the
// pkg/api subjects), and the projection loop that keeps the gateway's Pebble
// view (pkg/view) up to date with the events log.
//
// The gateway validates requests and records them as "*-requested" facts in
// the log; workers do the work. It reads images, containers and operations
// from its view and content from its node's store. Requests about one
// container are appended with an expected last sequence over all of that
// container's subjects, so they are decided against its latest state and
// two conflicting requests cannot both be recorded. After appending an
// event it waits (bounded) until its own view has applied it before
// replying, so a client that removes an image and then lists images does
// not see it again. Several gateways may serve at once: their endpoints
// share a queue group.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/view"
)

const (
	// QueueGroup is the queue group every gateway's endpoints join, so one
	// gateway answers each request.
	QueueGroup = "sd-gateway"
	// ActorHeader is the request header naming who is asking; requests
	// without it are recorded as AnonymousActor.
	ActorHeader = "Sd-Actor"
	// AnonymousActor is the actor of requests that do not name one.
	AnonymousActor = "anonymous"
	// ReadYourWritesTimeout bounds how long a request that appended an event
	// waits for the view to apply it, and how long a read waits for the view
	// to catch up with the log, before replying anyway.
	ReadYourWritesTimeout = 5 * time.Second

	requestTimeout  = 30 * time.Second
	maxInFlight     = 256
	maxActorLen     = 256
	followRetryBase = 100 * time.Millisecond
	followRetryMax  = 5 * time.Second
)

// Content is what the gateway needs of its node's content store: it reads,
// inspects and lists, and never writes (deletes are requested as events and
// performed by the fetcher).
type Content interface {
	content.Provider
	content.Manager
	content.IngestManager
}

// Config wires a Gateway.
type Config struct {
	// Conn serves the micro service. Required.
	Conn *nats.Conn
	// JS reads the events log for the projection. Required.
	JS jetstream.JetStream
	// Publisher appends the events requests cause. Required.
	Publisher events.Publisher
	// View is the gateway's projection; Run keeps it up to date. Required.
	View *view.View
	// Content is the node's content store, read by the content endpoints. Required.
	Content Content
	// Node names this node in the events the gateway appends.
	Node string
	// DefaultPlatform is used for pulls that name none; empty means the
	// host's (images.DefaultPlatform).
	DefaultPlatform string
	// Logger receives structured logs. Request bodies are never logged.
	Logger zerolog.Logger
	// BatchSize is the most events the projection applies in one view
	// commit (default sdjs.DefaultBatchSize).
	BatchSize int
}

// Gateway serves the API and runs the projection. Make one with New and
// call Run once.
type Gateway struct {
	cfg      Config
	log      zerolog.Logger
	platform string

	started atomic.Bool
	ready   chan struct{} // closed once every endpoint is subscribed

	mu       sync.Mutex // guards stopping and wg.Add
	stopping bool
	inflight sync.WaitGroup
	sem      chan struct{}
	baseCtx  context.Context // set by Run before the service starts
}

// New checks cfg and returns a Gateway. Errors wrap
// errdefs.ErrInvalidArgument.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.Conn == nil:
		return nil, fmt.Errorf("gateway: nats connection is required: %w", errdefs.ErrInvalidArgument)
	case cfg.JS == nil:
		return nil, fmt.Errorf("gateway: jetstream is required: %w", errdefs.ErrInvalidArgument)
	case cfg.Publisher == nil:
		return nil, fmt.Errorf("gateway: publisher is required: %w", errdefs.ErrInvalidArgument)
	case cfg.View == nil:
		return nil, fmt.Errorf("gateway: view is required: %w", errdefs.ErrInvalidArgument)
	case cfg.Content == nil:
		return nil, fmt.Errorf("gateway: content store is required: %w", errdefs.ErrInvalidArgument)
	}
	plat := images.DefaultPlatform()
	if cfg.DefaultPlatform != "" {
		p, err := images.ParsePlatform(cfg.DefaultPlatform)
		if err != nil {
			return nil, fmt.Errorf("gateway: default platform: %w", err)
		}
		plat = p
	}
	return &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "gateway").Str("node", cfg.Node).Logger(),
		platform: plat.String(),
		ready:    make(chan struct{}),
		sem:      make(chan struct{}, maxInFlight),
	}, nil
}

// Run registers the API service and projects the log into the view, from
// the view's watermark on, until ctx ends. It then stops the service, lets
// requests in flight finish, stops the projection and returns nil. It
// returns an error if the service cannot be registered or the view cannot
// apply an event (the projection never skips one silently). Run may be
// called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return fmt.Errorf("gateway: Run called twice: %w", errdefs.ErrFailedPrecondition)
	}
	// Requests and the projection outlive ctx briefly so that shutdown is
	// orderly: service first, then requests in flight, then the projection.
	g.baseCtx = context.WithoutCancel(ctx)
	projCtx, stopProj := context.WithCancel(g.baseCtx)
	defer stopProj()
	projDone := make(chan error, 1)
	go func() { projDone <- g.project(projCtx) }()

	svc, err := g.startService()
	if err != nil {
		stopProj()
		<-projDone
		return err
	}
	digestSub, err := g.startDigest()
	if err != nil {
		_ = svc.Stop()
		stopProj()
		<-projDone
		return err
	}
	close(g.ready)
	g.log.Info().Str("service", api.ServiceName).Str("version", api.ServiceVersion).
		Uint64("applied", g.cfg.View.AppliedSeq()).Msg("gateway serving")

	var runErr error
	projEnded := false
	select {
	case <-ctx.Done():
	case runErr = <-projDone:
		projEnded = true
	}
	if err := svc.Stop(); err != nil {
		g.log.Warn().Err(err).Msg("stopping the API service")
	}
	_ = digestSub.Unsubscribe()
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.inflight.Wait()
	stopProj()
	if !projEnded {
		runErr = <-projDone
	}
	g.log.Info().Uint64("applied", g.cfg.View.AppliedSeq()).Err(runErr).Msg("gateway stopped")
	return runErr
}

// endpoint is one API endpoint: it returns a reply to send as JSON (or a
// rawReply to send as is), or an error whose class becomes the micro error
// code.
type endpoint func(ctx context.Context, req micro.Request) (any, error)

// rawReply is sent as the reply body unencoded.
type rawReply []byte

func (g *Gateway) startService() (micro.Service, error) {
	svc, err := micro.AddService(g.cfg.Conn, micro.Config{
		Name:        api.ServiceName,
		Version:     api.ServiceVersion,
		Description: "Stevedore gateway: pulls, images, content, containers and operations",
		Metadata:    map[string]string{"node": g.cfg.Node},
		QueueGroup:  QueueGroup,
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			g.log.Error().Str("subject", e.Subject).Str("error", e.Description).Msg("API service error")
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: register service %s: %w", api.ServiceName, err)
	}
	eps := []struct {
		name, subject string
		fn            endpoint
	}{
		{"pull", api.SubjectPull, g.pull},
		{"images-list", api.SubjectImagesList, g.imagesList},
		{"images-remove", api.SubjectImagesRemove, g.imagesRemove},
		{"content-list", api.SubjectContentList, g.contentList},
		{"content-info", api.SubjectContentInfo, g.contentInfo},
		{"content-read", api.SubjectContentRead, g.contentRead},
		{"content-delete", api.SubjectContentDelete, g.contentDelete},
		{"content-active", api.SubjectContentActive, g.contentActive},
		{"ops-get", api.SubjectOperation, g.opsGet},
		{"view-at", api.SubjectViewAt, g.viewAt},
		{"containers-create", api.SubjectContainersCreate, g.containersCreate},
		{"containers-start", api.SubjectContainersStart, g.containersStart},
		{"containers-kill", api.SubjectContainersKill, g.containersKill},
		{"containers-delete", api.SubjectContainersDelete, g.containersDelete},
		{"containers-label", api.SubjectContainersLabel, g.containersLabel},
		{"containers-list", api.SubjectContainersList, g.containersList},
		{"containers-info", api.SubjectContainersInfo, g.containersInfo},
	}
	for _, ep := range eps {
		if err := svc.AddEndpoint(ep.name, g.wrap(ep.name, ep.fn), micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("gateway: add endpoint %s: %w", ep.subject, err)
		}
	}
	// micro answers pings as soon as the service is added; make sure the
	// server holds every endpoint's subscription before Ready says so.
	if err := g.cfg.Conn.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("gateway: register endpoints: %w: %w", err, errdefs.ErrUnavailable)
	}
	return svc, nil
}

// Ready is closed once Run serves every endpoint. A client that saw the
// service answer a ping may still find a later endpoint missing before then.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// wrap runs fn for each request in its own goroutine (micro calls handlers
// one at a time per endpoint, and some requests wait for the view), at most
// maxInFlight at once, and sends its reply or error.
func (g *Gateway) wrap(name string, fn endpoint) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		g.mu.Lock()
		if g.stopping {
			g.mu.Unlock()
			g.respondError(name, req, fmt.Errorf("the gateway is shutting down; retry: %w", errdefs.ErrUnavailable), 0)
			return
		}
		g.inflight.Add(1)
		g.mu.Unlock()
		g.sem <- struct{}{} // back-pressure: block this endpoint's delivery
		go func() {
			defer g.inflight.Done()
			defer func() { <-g.sem }()
			start := time.Now()
			ctx, cancel := context.WithTimeout(g.baseCtx, requestTimeout)
			defer cancel()
			reply, err := fn(ctx, req)
			if err != nil {
				g.respondError(name, req, err, time.Since(start))
				return
			}
			data, ok := reply.(rawReply)
			if !ok {
				if data, err = json.Marshal(reply); err != nil {
					g.respondError(name, req, fmt.Errorf("encode the reply: %w: %w", err, errdefs.ErrInternal), time.Since(start))
					return
				}
			}
			if err := g.send(req, nil, data); err != nil {
				g.log.Warn().Err(err).Str("endpoint", name).Msg("could not send reply")
				return
			}
			g.log.Debug().Str("endpoint", name).Dur("took", time.Since(start)).Msg("request served")
		}()
	})
}

func (g *Gateway) respondError(name string, req micro.Request, err error, took time.Duration) {
	code := errdefs.Code(err)
	lvl := zerolog.InfoLevel
	if code == "internal" || code == "unavailable" {
		lvl = zerolog.WarnLevel
	}
	g.log.WithLevel(lvl).Err(err).Str("endpoint", name).Str("code", code).Dur("took", took).Msg("request failed")
	hdr := nats.Header{micro.ErrorHeader: []string{err.Error()}, micro.ErrorCodeHeader: []string{code}}
	if rerr := g.send(req, hdr, nil); rerr != nil {
		g.log.Warn().Err(rerr).Str("endpoint", name).Msg("could not send error reply")
	}
}

// send replies to req on the service's connection. Replies are sent from
// the request's own goroutine, after micro's handler has returned, so they
// must not go through req.Respond or req.Error: those record the outcome in
// the request, which micro reads for its stats when the handler returns (a
// data race). The reply is what req.Error would send: an error reply
// carries micro's error headers.
func (g *Gateway) send(req micro.Request, hdr nats.Header, data []byte) error {
	if req.Reply() == "" {
		return nil // a publish, not a request: nobody to answer
	}
	return g.cfg.Conn.PublishMsg(&nats.Msg{Subject: req.Reply(), Header: hdr, Data: data})
}

// decode reads the request body into v; an empty body is the zero request.
func decode(req micro.Request, v any) error {
	data := req.Data()
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("the request is not valid JSON for %s (%w): %w", req.Subject(), err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// namespace returns ns, or the default namespace if it is empty.
func namespace(ns string) (string, error) {
	if ns == "" {
		return events.DefaultNamespace, nil
	}
	if err := events.ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return ns, nil
}

// actor returns who is asking, from the ActorHeader.
func actor(req micro.Request) (string, error) {
	a := req.Headers().Get(ActorHeader)
	switch {
	case a == "":
		return AnonymousActor, nil
	case len(a) > maxActorLen:
		return "", fmt.Errorf("the %s header is longer than %d bytes: %w", ActorHeader, maxActorLen, errdefs.ErrInvalidArgument)
	}
	for _, r := range a {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("the %s header contains control characters: %w", ActorHeader, errdefs.ErrInvalidArgument)
		}
	}
	return a, nil
}

// append publishes ev, deduplicated by msgID, and waits (bounded) until the
// view has applied it, so the reply reflects it.
func (g *Gateway) append(ctx context.Context, ev *events.Envelope, msgID string) (uint64, error) {
	seq, err := g.cfg.Publisher.Publish(ctx, ev, events.WithMsgID(msgID))
	if err != nil {
		return 0, fmt.Errorf("could not record the request in the event log (%w); retry: %w", err, errdefs.ErrUnavailable)
	}
	if ev.Type == events.TypePullRequested {
		metrics.PullsRequested.Inc()
	}
	g.log.Info().Str("type", string(ev.Type)).Str("ns", ev.Namespace).Str("op", ev.Operation).
		Str("actor", ev.Actor).Uint64("seq", seq).Msg("event appended")
	g.awaitView(ctx, seq)
	return seq, nil
}

// awaitView waits up to ReadYourWritesTimeout for the view to apply seq. On
// timeout the caller replies anyway: the event is in the log and the view
// will catch up.
func (g *Gateway) awaitView(ctx context.Context, seq uint64) {
	wctx, cancel := context.WithTimeout(ctx, ReadYourWritesTimeout)
	defer cancel()
	if err := g.cfg.View.WaitApplied(wctx, seq); err != nil {
		g.log.Warn().Err(err).Uint64("seq", seq).Msg("view is behind; replying before it caught up")
	}
}

// catchUp waits (bounded) for the view to apply everything in the log when
// the request arrived, so reads reflect what any gateway appended before.
func (g *Gateway) catchUp(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, ReadYourWritesTimeout)
	defer cancel()
	last, err := sdjs.LastSeq(lctx, g.cfg.JS)
	if err != nil {
		g.log.Debug().Err(err).Msg("log position unknown; reading the view as it is")
		return
	}
	if err := g.cfg.View.WaitApplied(lctx, last); err != nil {
		g.log.Warn().Err(err).Uint64("seq", last).Msg("view is behind; reading it as it is")
	}
}

// errApply marks a view error that must stop the projection.
type errApply struct{ err error }

func (e errApply) Error() string { return e.err.Error() }
func (e errApply) Unwrap() error { return e.err }

// project follows the log from the view's watermark and applies every
// event, until ctx ends (nil) or the view fails to apply one (the error).
// Events are applied in batches: many per view commit while catching up,
// each one at once at the head of the log (see sdjs.FollowBatches). Errors
// reading the log are retried with backoff, resuming from the watermark.
func (g *Gateway) project(ctx context.Context) error {
	metrics.ProjectionApplied.Set(float64(g.cfg.View.AppliedSeq()))
	g.checkTrimmed(ctx)
	delay := followRetryBase
	for {
		from := g.cfg.View.AppliedSeq() + 1
		g.log.Debug().Uint64("from", from).Msg("following the events log")
		err := sdjs.FollowBatches(ctx, g.cfg.JS, sdjs.FollowConfig{
			StartSeq: from, Undecodable: g.skipUnreadable, BatchSize: g.cfg.BatchSize,
			Name: "gateway-view", Logger: g.log,
		}, func(batch []*events.Envelope, pending uint64) error {
			if err := applyBatch(g.cfg.View, batch, pending); err != nil {
				return errApply{err}
			}
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		var ae errApply
		if errors.As(err, &ae) {
			return fmt.Errorf("gateway: project the events log into the view: %w", ae.err)
		}
		if g.cfg.View.AppliedSeq() >= from {
			delay = followRetryBase // made progress before failing
		}
		g.log.Warn().Err(err).Dur("retry_in", delay).Msg("following the events log failed; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, followRetryMax)
	}
}

// applyBatch applies one batch to v and records it in the metrics.
func applyBatch(v *view.View, batch []*events.Envelope, pending uint64) error {
	start := time.Now()
	if err := v.ApplyBatch(batch); err != nil {
		return err
	}
	metrics.ProjectionCommit.Observe(time.Since(start).Seconds())
	metrics.ProjectionBatch.Observe(float64(len(batch)))
	metrics.ProjectionEvents.Add(float64(len(batch)))
	metrics.ProjectionApplied.Set(float64(v.AppliedSeq()))
	metrics.ProjectionLag.Set(float64(pending))
	return nil
}

// checkTrimmed warns when events the view has not applied have aged out
// of the log: the view then lacks their facts (docs/log-retention.md).
func (g *Gateway) checkTrimmed(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, ReadYourWritesTimeout)
	defer cancel()
	st, err := sdjs.StreamState(sctx, g.cfg.JS)
	if err != nil {
		return
	}
	if applied := g.cfg.View.AppliedSeq(); st.FirstSeq > applied+1 {
		g.log.Error().Uint64("applied", applied).Uint64("first", st.FirstSeq).
			Msgf("events %d to %d aged out of the log before this view applied them; the view lacks their facts", applied+1, st.FirstSeq-1)
	}
}

// skipUnreadable lets the projection advance past a message in the log
// that is not an event, or an event from a newer schema than this gateway
// reads, so that one such message cannot stall it: FollowBatches delivers
// it as a bare sequence, which only advances the view's watermark. A
// replay from zero skips it the same way.
func (g *Gateway) skipUnreadable(seq uint64, subject string, cause error) error {
	if errors.Is(cause, events.ErrNewerVersion) {
		g.log.Warn().Err(cause).Uint64("seq", seq).Str("subject", subject).Msg("event from a newer schema; the view skips it")
		return nil
	}
	g.log.Error().Err(cause).Uint64("seq", seq).Str("subject", subject).Msg("event log holds a message that is not an event; skipping it")
	return nil
}
