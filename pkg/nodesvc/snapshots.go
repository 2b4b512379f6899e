// Package nodesvc serves node-local state over NATS as micro services:
// the node's snapshots (list, mounts, prepare, remove; run by the unpacker,
// which owns them) and its tasks' logs (run by the executor). Snapshot
// removals are recorded as snapshot-removed events.
package nodesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// Config wires the service.
type Config struct {
	Conn        *nats.Conn
	Snapshotter snapshots.Snapshotter
	// Name names the snapshotter ("overlay", "native").
	Name      string
	Publisher events.Publisher
	Node      string
	Namespace string
	Logger    zerolog.Logger
}

// Start registers the service. Stop it with the returned service's Stop.
func Start(cfg Config) (micro.Service, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = events.DefaultNamespace
	}
	s := &service{cfg: cfg}
	svc, err := micro.AddService(cfg.Conn, micro.Config{
		Name:        api.SnapshotsService,
		Version:     api.ServiceVersion,
		Description: "Stevedore snapshots of node " + cfg.Node,
		Metadata:    map[string]string{"node": cfg.Node, "snapshotter": cfg.Name},
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot service: %w", err)
	}
	eps := []struct {
		verb string
		fn   func(context.Context, micro.Request) (any, error)
	}{
		{"list", s.list},
		{"mounts", s.mounts},
		{"remove", s.remove},
		{"prepare", s.prepare},
	}
	for _, ep := range eps {
		if err := svc.AddEndpoint(ep.verb, s.wrap(ep.verb, ep.fn), micro.WithEndpointSubject(api.SnapshotsSubject(cfg.Node, ep.verb))); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("snapshot service endpoint %s: %w", ep.verb, err)
		}
	}
	// Serving once the server holds every endpoint's subscription.
	if err := cfg.Conn.FlushTimeout(5 * time.Second); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("snapshot service: %w: %w", err, errdefs.ErrUnavailable)
	}
	return svc, nil
}

// ActorHeader carries the identity of who asked, as with the gateway.
const ActorHeader = "Sd-Actor"

// OperationHeader carries the operation a snapshot removal is part of (the
// container removal that asked for it): the recorded snapshot-removed event
// takes it, so the operation's history holds the removal. Without it the
// removal is an operation of its own.
const OperationHeader = "Sd-Op"

// CausationHeader carries the id of the event that caused a snapshot
// removal (the container-delete-requested of `ctl rm`, the request of a
// --rm container's run): the snapshot-removed event's causation.
const CausationHeader = "Sd-Causation"

// maxHeaderToken bounds the operation and causation headers.
const maxHeaderToken = 128

// ContainerRemovalHeader, with the value "1" on a remove request, says the
// request is the executor's removal of the container whose rootfs the
// snapshot is (the container's task is gone and its rootfs unmounted).
// Client sets it. Without it, removing an active snapshot labelled
// snapshots.ContainerLabel is refused with errdefs.ErrFailedPrecondition:
// its container may still run on it.
const ContainerRemovalHeader = "Sd-Container-Removal"

type service struct{ cfg Config }

func (s *service) wrap(verb string, fn func(context.Context, micro.Request) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		reply, err := fn(ctx, req)
		if err != nil {
			s.cfg.Logger.Info().Err(err).Str("endpoint", verb).Msg("snapshot request failed")
			_ = req.Error(errdefs.Code(err), err.Error(), nil)
			return
		}
		if err := req.RespondJSON(reply); err != nil {
			s.cfg.Logger.Warn().Err(err).Str("endpoint", verb).Msg("could not send reply")
		}
	})
}

func decode(data []byte, v any) error {
	if len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("request is not valid JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (s *service) list(ctx context.Context, _ micro.Request) (any, error) {
	var out []api.Snapshot
	err := s.cfg.Snapshotter.Walk(ctx, func(info snapshots.Info) error {
		sn := api.Snapshot{Key: info.Key, Parent: info.Parent, Kind: info.Kind.String(), Created: info.Created, Labels: info.Labels}
		if u, err := s.cfg.Snapshotter.Usage(ctx, info.Key); err == nil {
			sn.Size, sn.Inodes = u.Size, u.Inodes
		}
		out = append(out, sn)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Key < out[j].Key
	})
	return api.SnapshotsListReply{Node: s.cfg.Node, Snapshotter: s.cfg.Name, Snapshots: out}, nil
}

func (s *service) mounts(ctx context.Context, r micro.Request) (any, error) {
	var req api.SnapshotRequest
	if err := decode(r.Data(), &req); err != nil {
		return nil, err
	}
	if req.Key == "" {
		return nil, fmt.Errorf("a snapshot key is required: %w", errdefs.ErrInvalidArgument)
	}
	ms, err := s.cfg.Snapshotter.Mounts(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return s.mountsReply(ms), nil
}

func (s *service) prepare(ctx context.Context, r micro.Request) (any, error) {
	var req api.SnapshotPrepareRequest
	if err := decode(r.Data(), &req); err != nil {
		return nil, err
	}
	if req.Key == "" || req.Parent == "" {
		return nil, fmt.Errorf("a key and a parent are required: %w", errdefs.ErrInvalidArgument)
	}
	ms, err := s.cfg.Snapshotter.Prepare(ctx, req.Key, req.Parent, req.Labels)
	if err != nil {
		return nil, err
	}
	return s.mountsReply(ms), nil
}

func (s *service) mountsReply(ms []snapshots.Mount) api.SnapshotMountsReply {
	reply := api.SnapshotMountsReply{Snapshotter: s.cfg.Name}
	var lines []string
	for _, m := range ms {
		reply.Mounts = append(reply.Mounts, api.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
		lines = append(lines, m.String())
	}
	reply.Command = strings.Join(lines, " && ")
	return reply
}

func (s *service) remove(ctx context.Context, r micro.Request) (any, error) {
	var req api.SnapshotRequest
	if err := decode(r.Data(), &req); err != nil {
		return nil, err
	}
	if req.Key == "" {
		return nil, fmt.Errorf("a snapshot key is required: %w", errdefs.ErrInvalidArgument)
	}
	op, causation := r.Headers().Get(OperationHeader), r.Headers().Get(CausationHeader)
	if err := checkHeaderToken(OperationHeader, op); err != nil {
		return nil, err
	}
	if err := checkHeaderToken(CausationHeader, causation); err != nil {
		return nil, err
	}
	if op == "" {
		op = nuid.Next()
	}
	if r.Headers().Get(ContainerRemovalHeader) != "1" {
		if err := s.checkNoContainer(ctx, req.Key); err != nil {
			return nil, err
		}
	}
	if err := s.cfg.Snapshotter.Remove(ctx, req.Key); err != nil {
		return nil, err
	}
	actor := r.Headers().Get(ActorHeader)
	if actor == "" {
		actor = "anonymous"
	}
	ev, err := events.New(events.Meta{Namespace: s.cfg.Namespace, Node: s.cfg.Node, Actor: actor, Operation: op, Causation: causation}, events.TypeSnapshotRemoved,
		events.SnapshotAggregate(req.Key), events.SnapshotRemoved{Key: req.Key, Snapshotter: s.cfg.Name})
	if err != nil {
		return nil, err
	}
	seq, err := s.cfg.Publisher.Publish(ctx, ev)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s removed, but recording it failed: %w", req.Key, err)
	}
	return api.SnapshotRemoveReply{Seq: seq}, nil
}

// checkHeaderToken checks the value of header h, if any: an operation id
// or event id is one subject token (operations name progress subjects).
func checkHeaderToken(h, v string) error {
	if v == "" {
		return nil
	}
	if len(v) > maxHeaderToken {
		return fmt.Errorf("the %s header is longer than %d bytes: %w", h, maxHeaderToken, errdefs.ErrInvalidArgument)
	}
	for _, r := range v {
		if r <= ' ' || r == 0x7f || strings.ContainsRune(".*>", r) {
			return fmt.Errorf("the %s header %q has a character it cannot have (one of . * >, a space or a control character): %w", h, v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// checkNoContainer refuses (errdefs.ErrFailedPrecondition) to remove key if
// it is a container's rootfs: an active snapshot labelled
// snapshots.ContainerLabel. Only the container's removal removes it.
func (s *service) checkNoContainer(ctx context.Context, key string) error {
	info, err := s.cfg.Snapshotter.Stat(ctx, key)
	if err != nil {
		return err
	}
	ctr := info.Labels[snapshots.ContainerLabel]
	if info.Kind != snapshots.KindActive || ctr == "" {
		return nil
	}
	return fmt.Errorf("snapshot %s is the rootfs of container %s: remove the container first (ctl rm): %w", key, ctr, errdefs.ErrFailedPrecondition)
}
