package gateway

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/remotes"
)

// maxSerializedAttempts bounds how often a container request is re-decided
// after another append to the same container won the race; between
// attempts it waits a random while of up to attempt × serializedBackoff, so
// that requests racing each other spread out.
const (
	maxSerializedAttempts = 10
	serializedBackoff     = 5 * time.Millisecond
)

func checkContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("no container id given: %w", errdefs.ErrInvalidArgument)
	}
	if !events.ValidContainerID(id) {
		return fmt.Errorf("container id %q is not valid: it must match %s: %w", id, events.ContainerIDPattern, errdefs.ErrInvalidArgument)
	}
	return nil
}

// newContainerID returns 24 random lowercase hex characters.
func newContainerID() string {
	var b [12]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// containerFilter matches every event of one container.
func containerFilter(ns, id string) string {
	return events.FilterSubject(ns, events.KindContainer, id, "")
}

// checkOptions validates run options as far as the gateway can without the
// image or the node.
func checkOptions(o events.ContainerOptions) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
	}
	switch o.Network {
	case "", "none", "host":
	default:
		return bad(`network %q is not supported: use "none" or "host"`, o.Network)
	}
	for _, m := range o.Mounts {
		if m.Source == "" || !path.IsAbs(m.Source) {
			return bad("mount source %q must be an absolute host path", m.Source)
		}
		if !path.IsAbs(m.Destination) {
			return bad("mount destination %q must be an absolute path in the container", m.Destination)
		}
	}
	if o.MemoryLimit < 0 {
		return bad("memory limit %d is negative", o.MemoryLimit)
	}
	if o.CPUs < 0 {
		return bad("cpus %g is negative", o.CPUs)
	}
	if o.PidsLimit < 0 {
		return bad("pids limit %d is negative", o.PidsLimit)
	}
	for k := range o.Labels {
		if k == "" {
			return bad("a label has an empty key")
		}
	}
	if o.Platform != "" {
		if _, err := images.ParsePlatform(o.Platform); err != nil {
			return err
		}
	}
	return nil
}

// parseSignal turns a signal name (with or without "SIG", any case) or
// number into its canonical name, e.g. "SIGTERM". Empty means SIGTERM.
func parseSignal(s string) (string, error) {
	if s == "" {
		return "SIGTERM", nil
	}
	var sig syscall.Signal
	if n, err := strconv.Atoi(s); err == nil {
		sig = syscall.Signal(n)
		if n <= 0 || unix.SignalName(sig) == "" {
			return "", fmt.Errorf("unknown signal %s: %w", s, errdefs.ErrInvalidArgument)
		}
	} else {
		name := strings.ToUpper(s)
		if !strings.HasPrefix(name, "SIG") {
			name = "SIG" + name
		}
		if sig = unix.SignalNum(name); sig == 0 {
			return "", fmt.Errorf("unknown signal %q: %w", s, errdefs.ErrInvalidArgument)
		}
	}
	return unix.SignalName(sig), nil
}

// containersCreate records container-create-requested for a new container
// id. The append is serialized against the id's events, so of two creates
// of one id at once exactly one is recorded.
func (g *Gateway) containersCreate(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerCreateRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	id := r.ID
	if id == "" {
		id = newContainerID()
	} else if err := checkContainerID(id); err != nil {
		return nil, err
	}
	if r.Image == "" {
		return nil, fmt.Errorf("no image given: %w", errdefs.ErrInvalidArgument)
	}
	ref, err := remotes.ParseReference(r.Image)
	if err != nil {
		return nil, err
	}
	if err := checkOptions(r.Options); err != nil {
		return nil, err
	}
	node := r.Node
	if node == "" {
		node = g.cfg.Node
	}
	switch {
	case node == "":
		return nil, fmt.Errorf("no node given and the gateway names none: %w", errdefs.ErrInvalidArgument)
	}
	if err := events.ValidateNode(node); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	who, err := actor(req)
	if err != nil {
		return nil, err
	}
	image := ref.String()
	// The image must be unpacked on the node; a client that finds it is not
	// pulls it and asks again.
	img, err := g.cfg.View.Image(ns, image)
	if errors.Is(err, errdefs.ErrNotFound) || err == nil && !slices.Contains(img.Unpacked, node) {
		// Maybe pulled a moment ago: look again once the view caught up.
		g.catchUp(ctx)
		img, err = g.cfg.View.Image(ns, image)
	}
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return nil, fmt.Errorf("image %s not found: pull it first: %w", image, errdefs.ErrNotFound)
	case err != nil:
		return nil, err
	case !slices.Contains(img.Unpacked, node):
		return nil, fmt.Errorf("image %s is not unpacked on node %s: pull it there first: %w", image, node, errdefs.ErrNotFound)
	}

	// Two independent round trips: ask them at once.
	alive := make(chan error, 1)
	go func() { alive <- g.executorAlive(ctx, node) }()
	inUse := fmt.Errorf("container id %s is already in use: %w", id, errdefs.ErrAlreadyExists)
	filter := containerFilter(ns, id)
	last, err := sdjs.LastFor(ctx, g.cfg.JS, filter)
	if aerr := <-alive; aerr != nil {
		return nil, aerr
	}
	if err != nil {
		return nil, fmt.Errorf("could not read container %s's events (%w); retry: %w", id, err, errdefs.ErrUnavailable)
	}
	var lastSeq uint64
	op := nuid.Next()
	refuse := func() (any, error) {
		g.recordRefusal(ctx, events.Meta{Namespace: ns, Operation: op, Actor: who, Node: node}, events.ContainerCreateRefused{
			ID: id, Image: image, Node: node, Start: r.Start, Code: errdefs.Code(inUse), Message: inUse.Error(),
		})
		return nil, inUse
	}
	if last != nil {
		free := last.Type == events.TypeContainerDeleted || last.Type == events.TypeContainerCreateFailed
		if last.Type == events.TypeContainerCreateRefused {
			// A refusal changes nothing: the id is free if its last
			// create was undone since (or it never had one).
			if free, err = g.freeAfterRefusal(ctx, ns, id); err != nil {
				return nil, fmt.Errorf("could not read container %s's events (%w); retry: %w", id, err, errdefs.ErrUnavailable)
			}
		}
		if !free {
			return refuse()
		}
		lastSeq = last.Seq
	}
	// The request's node is the one asked to create it: its subject routes
	// it to that node's executor.
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: who, Node: node},
		events.TypeContainerCreateRequested, events.ContainerAggregate(id), events.ContainerCreateRequested{
			ID: id, Image: image, Node: node, Options: r.Options, Rm: r.Rm, Start: r.Start, Stdin: r.Stdin,
		})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInternal)
	}
	seq, err := g.appendSerialized(ctx, ev, "container-create-requested/"+op, lastSeq, filter)
	if errors.Is(err, sdjs.ErrWrongLastSequence) {
		return refuse()
	}
	if err != nil {
		return nil, err
	}
	return api.OpReply{Operation: op, Seq: seq, Ref: id}, nil
}

// appendSerialized publishes ev only if the last event on filter is still
// at lastSeq (an error wrapping sdjs.ErrWrongLastSequence otherwise). It
// does not wait for the view: a client follows the container's events from
// the returned sequence, and reads catch the view up to the log first.
func (g *Gateway) appendSerialized(ctx context.Context, ev *events.Envelope, msgID string, lastSeq uint64, filter string) (uint64, error) {
	seq, err := g.cfg.Publisher.Publish(ctx, ev, events.WithMsgID(msgID), events.WithExpectLastSeqFor(lastSeq, filter))
	if errors.Is(err, sdjs.ErrWrongLastSequence) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("could not record the request in the event log (%w); retry: %w", err, errdefs.ErrUnavailable)
	}
	g.log.Info().Str("type", string(ev.Type)).Str("ns", ev.Namespace).Str("op", ev.Operation).
		Str("actor", ev.Actor).Uint64("seq", seq).Msg("event appended")
	return seq, nil
}

// containerRequest is a request about an existing container: decide looks
// at the container as of its last event, last (nil if the log has none),
// and returns the event to record (its operation is set by mutateContainer).
type containerRequest struct {
	ns, id string
	who    string
	typ    events.Type
	decide func(c api.Container, last *events.Envelope) (payload any, err error)
}

// mutateContainer decides r against the container as the view has it after
// the container's last event, and records the event decide returns,
// serialized against the container's events. If another event on the
// container is appended in between, it decides again.
func (g *Gateway) mutateContainer(ctx context.Context, r containerRequest) (api.OpReply, error) {
	filter := containerFilter(r.ns, r.id)
	op := nuid.Next()
	for attempt := range maxSerializedAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return api.OpReply{}, fmt.Errorf("container %s: %w: %w", r.id, ctx.Err(), errdefs.ErrUnavailable)
			case <-time.After(rand.N(time.Duration(attempt) * serializedBackoff)):
			}
		}
		last, err := sdjs.LastFor(ctx, g.cfg.JS, filter)
		if err != nil {
			return api.OpReply{}, fmt.Errorf("could not read container %s's events (%w); retry: %w", r.id, err, errdefs.ErrUnavailable)
		}
		var lastSeq uint64
		if last != nil {
			lastSeq = last.Seq
			wctx, cancel := context.WithTimeout(ctx, ReadYourWritesTimeout)
			err := g.cfg.View.WaitApplied(wctx, lastSeq)
			cancel()
			if err != nil {
				return api.OpReply{}, fmt.Errorf("the gateway's view has not caught up with container %s (%w); retry: %w", r.id, err, errdefs.ErrUnavailable)
			}
		}
		c, err := g.cfg.View.Container(r.ns, r.id)
		if errors.Is(err, errdefs.ErrNotFound) {
			return api.OpReply{}, fmt.Errorf("container %s not found in namespace %q: %w", r.id, r.ns, errdefs.ErrNotFound)
		}
		if err != nil {
			return api.OpReply{}, err
		}
		payload, err := r.decide(c, last)
		if err != nil {
			return api.OpReply{}, err
		}
		node := c.Node // the container's node acts on it
		if node == "" {
			node = g.cfg.Node
		}
		ev, err := events.New(events.Meta{Namespace: r.ns, Operation: op, Actor: r.who, Node: node},
			r.typ, events.ContainerAggregate(r.id), payload)
		if err != nil {
			return api.OpReply{}, fmt.Errorf("%w: %w", err, errdefs.ErrInternal)
		}
		seq, err := g.appendSerialized(ctx, ev, string(r.typ)+"/"+op, lastSeq, filter)
		if errors.Is(err, sdjs.ErrWrongLastSequence) {
			g.log.Debug().Str("container", r.id).Str("type", string(r.typ)).Msg("container changed while deciding; deciding again")
			continue
		}
		if err != nil {
			return api.OpReply{}, err
		}
		return api.OpReply{Operation: op, Seq: seq, Ref: r.id}, nil
	}
	return api.OpReply{}, fmt.Errorf("container %s keeps changing; retry: %w", r.id, errdefs.ErrUnavailable)
}

// containerTarget reads what every request about one container starts with.
func containerTarget(req micro.Request, nsIn, id string) (ns, who string, err error) {
	if ns, err = namespace(nsIn); err != nil {
		return "", "", err
	}
	if err := checkContainerID(id); err != nil {
		return "", "", err
	}
	if who, err = actor(req); err != nil {
		return "", "", err
	}
	return ns, who, nil
}

// containersStart records task-start-requested for a container whose task
// is not running and is not being started: a start request is pending while
// it is the container's last event, that is until its node's executor
// answers it with task-started or task-start-failed (a restarted executor
// answers the requests it had not; one that gives up records
// task-start-failed). Two starts at once are serialized by mutateContainer,
// so exactly one of them is recorded and the other is refused. A start
// requested again after another event (a label update) came in between is
// recorded, and the executor answers it with task-start-failed when the
// task already runs.
func (g *Gateway) containersStart(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerStartRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, who, err := containerTarget(req, r.Namespace, r.ID)
	if err != nil {
		return nil, err
	}
	return g.mutateContainer(ctx, containerRequest{ns: ns, id: r.ID, who: who, typ: events.TypeTaskStartRequested,
		decide: func(c api.Container, last *events.Envelope) (any, error) {
			if c.Task.Status == api.TaskRunning {
				return nil, fmt.Errorf("container %s is already running: %w", c.ID, errdefs.ErrFailedPrecondition)
			}
			if last != nil && last.Type == events.TypeTaskStartRequested {
				return nil, fmt.Errorf("container %s is already starting (its start request awaits node %s's executor): %w", c.ID, c.Node, errdefs.ErrFailedPrecondition)
			}
			return events.TaskStartRequested{ID: c.ID, Node: c.Node, Stdin: r.Stdin}, nil
		}})
}

// containersKill records task-kill-requested for a running task.
func (g *Gateway) containersKill(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerKillRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, who, err := containerTarget(req, r.Namespace, r.ID)
	if err != nil {
		return nil, err
	}
	sig, err := parseSignal(r.Signal)
	if err != nil {
		return nil, err
	}
	return g.mutateContainer(ctx, containerRequest{ns: ns, id: r.ID, who: who, typ: events.TypeTaskKillRequested,
		decide: func(c api.Container, _ *events.Envelope) (any, error) {
			if c.Task.Status != api.TaskRunning {
				return nil, fmt.Errorf("container %s is not running (its task is %s): %w", c.ID, c.Task.Status, errdefs.ErrFailedPrecondition)
			}
			return events.TaskKillRequested{ID: c.ID, Node: c.Node, Signal: sig}, nil
		}})
}

// containersDelete records container-delete-requested; a running container
// is deleted only with Force (the executor kills it first).
func (g *Gateway) containersDelete(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerDeleteRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, who, err := containerTarget(req, r.Namespace, r.ID)
	if err != nil {
		return nil, err
	}
	return g.mutateContainer(ctx, containerRequest{ns: ns, id: r.ID, who: who, typ: events.TypeContainerDeleteRequested,
		decide: func(c api.Container, _ *events.Envelope) (any, error) {
			if c.Task.Status == api.TaskRunning && !r.Force {
				return nil, fmt.Errorf("container %s is running: stop it first or use --force: %w", c.ID, errdefs.ErrFailedPrecondition)
			}
			return events.ContainerDeleteRequested{ID: c.ID, Node: c.Node, Force: r.Force}, nil
		}})
}

// containersLabel merges labels into the container's (an empty value
// removes a label) and records container-labels-updated with the result.
func (g *Gateway) containersLabel(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerLabelRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, who, err := containerTarget(req, r.Namespace, r.ID)
	if err != nil {
		return nil, err
	}
	if len(r.Labels) == 0 {
		return nil, fmt.Errorf("no labels given: %w", errdefs.ErrInvalidArgument)
	}
	for k := range r.Labels {
		if k == "" {
			return nil, fmt.Errorf("a label has an empty key: %w", errdefs.ErrInvalidArgument)
		}
	}
	return g.mutateContainer(ctx, containerRequest{ns: ns, id: r.ID, who: who, typ: events.TypeContainerLabelsUpdated,
		decide: func(c api.Container, _ *events.Envelope) (any, error) {
			labels := maps.Clone(c.Labels)
			if labels == nil {
				labels = map[string]string{}
			}
			for k, v := range r.Labels {
				if v == "" {
					delete(labels, k)
				} else {
					labels[k] = v
				}
			}
			return events.ContainerLabelsUpdated{ID: c.ID, Labels: labels}, nil
		}})
}

// containersList lists the namespace's containers from the view, without
// their specs.
func (g *Gateway) containersList(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainersListRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	g.catchUp(ctx)
	cs, err := g.cfg.View.Containers(ns)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return api.ContainersListReply{Containers: cs}, nil
}

// containersInfo returns one container from the view, with its spec.
func (g *Gateway) containersInfo(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContainerRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	if err := checkContainerID(r.ID); err != nil {
		return nil, err
	}
	g.catchUp(ctx)
	c, err := g.cfg.View.Container(ns, r.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("container %s not found in namespace %q: %w", r.ID, ns, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// recordRefusal records that a create was refused: a fact for an audit
// (who tried to take which id), not a change to the container it names. A
// failure to record it is logged; the refusal stands either way.
func (g *Gateway) recordRefusal(ctx context.Context, m events.Meta, p events.ContainerCreateRefused) {
	ev, err := events.New(m, events.TypeContainerCreateRefused, events.ContainerAggregate(p.ID), p)
	if err == nil {
		_, err = g.cfg.Publisher.Publish(ctx, ev, events.WithMsgID(string(ev.Type)+"/"+m.Operation))
	}
	if err != nil {
		g.log.Warn().Err(err).Str("container", p.ID).Str("op", m.Operation).Msg("could not record a refused create")
	}
}

// freeAfterRefusal reports whether container id is free when its last event
// is a refused create: no create was ever requested, or the last one was
// followed by the container's deletion or its create's failure.
func (g *Gateway) freeAfterRefusal(ctx context.Context, ns, id string) (bool, error) {
	var seqs [3]uint64
	for i, t := range []events.Type{events.TypeContainerCreateRequested, events.TypeContainerDeleted, events.TypeContainerCreateFailed} {
		ev, err := sdjs.LastFor(ctx, g.cfg.JS, events.FilterSubject(ns, events.KindContainer, id, t))
		if err != nil {
			return false, err
		}
		if ev != nil {
			seqs[i] = ev.Seq
		}
	}
	return seqs[0] == 0 || max(seqs[1], seqs[2]) > seqs[0], nil
}
