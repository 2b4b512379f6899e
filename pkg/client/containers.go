package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
)

// ValidateContainerID accepts an id a container can have: letters, digits,
// '_' and '-', starting with a letter or digit, at most 128 characters (it
// is one token of the container's event and stdio subjects). Errors wrap
// errdefs.ErrInvalidArgument.
func ValidateContainerID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: no container id given", errdefs.ErrInvalidArgument)
	}
	if !events.ValidContainerID(id) {
		return fmt.Errorf("%w: container id %q: use letters, digits, '_' and '-' (starting with a letter or digit), at most 128 characters", errdefs.ErrInvalidArgument, id)
	}
	return nil
}

// NewContainerID returns a random container id: 24 hex digits.
func NewContainerID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// ContainerCreate asks the gateway to create a container, and with req.Start
// to start its task too. It returns once the request is recorded; the node's
// executor then records container-created or container-create-failed (and
// with Start, task-started or task-start-failed): follow them with
// WaitContainer or WaitContainerOp from the returned sequence. An empty
// req.Namespace is the client's; an empty req.ID lets the gateway pick one
// (Run picks one itself, so it can subscribe to the task's stdio first).
func (c *Client) ContainerCreate(ctx context.Context, req api.ContainerCreateRequest) (api.OpReply, error) {
	if req.Namespace == "" {
		req.Namespace = c.ns
	}
	if req.ID != "" {
		if err := ValidateContainerID(req.ID); err != nil {
			return api.OpReply{}, err
		}
	}
	if req.Image == "" {
		return api.OpReply{}, fmt.Errorf("%w: no image given", errdefs.ErrInvalidArgument)
	}
	var op api.OpReply
	err := c.call(ctx, api.SubjectContainersCreate, req, &op)
	return op, err
}

// ContainerStart asks for the task of created container id to be started;
// with stdin its stdin stays open, fed from its stdin subject. The executor
// records task-started or task-start-failed.
func (c *Client) ContainerStart(ctx context.Context, id string, stdin bool) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectContainersStart, api.ContainerStartRequest{Namespace: c.ns, ID: id, Stdin: stdin}, &op)
	return op, err
}

// ContainerKill asks for signal sig ("SIGTERM", "TERM", "KILL" or a number;
// empty is SIGTERM) to be sent to container id's task. A task that is not
// running is an error wrapping errdefs.ErrFailedPrecondition, an unknown
// container one wrapping errdefs.ErrNotFound.
func (c *Client) ContainerKill(ctx context.Context, id, sig string) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectContainersKill, api.ContainerKillRequest{Namespace: c.ns, ID: id, Signal: sig}, &op)
	return op, err
}

// ContainerDelete asks for container id to be removed; its task must have
// exited unless force, which kills it first. Removal is asynchronous: the
// executor records container-deleted or container-delete-failed, which
// WaitContainerOp(ctx, id, op, events.TypeContainerDeleted) waits for.
func (c *Client) ContainerDelete(ctx context.Context, id string, force bool) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectContainersDelete, api.ContainerDeleteRequest{Namespace: c.ns, ID: id, Force: force}, &op)
	return op, err
}

// ContainerLabel sets labels on container id; an empty value removes the
// label.
func (c *Client) ContainerLabel(ctx context.Context, id string, labels map[string]string) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectContainersLabel, api.ContainerLabelRequest{Namespace: c.ns, ID: id, Labels: labels}, &op)
	return op, err
}

// Containers returns the containers of the client's namespace, without
// their specs. It is never nil.
func (c *Client) Containers(ctx context.Context) ([]api.Container, error) {
	var r api.ContainersListReply
	if err := c.call(ctx, api.SubjectContainersList, api.ContainersListRequest{Namespace: c.ns}, &r); err != nil {
		return nil, err
	}
	if r.Containers == nil {
		r.Containers = []api.Container{}
	}
	return r.Containers, nil
}

// Container describes container id, with its runtime spec, or returns an
// error wrapping errdefs.ErrNotFound.
func (c *Client) Container(ctx context.Context, id string) (api.Container, error) {
	var ctr api.Container
	err := c.call(ctx, api.SubjectContainersInfo, api.ContainerRequest{Namespace: c.ns, ID: id}, &ctr)
	return ctr, err
}

// NoExecutorError is the error of a task log request that no executor
// answered: none runs for Node, or Node is misspelt. It wraps
// errdefs.ErrUnavailable and nats.ErrNoResponders.
type NoExecutorError struct {
	Node string
	err  error
}

func (e *NoExecutorError) Error() string {
	return fmt.Sprintf("no executor answered for node %s (is an executor running on %s, under that name?)", e.Node, e.Node)
}

func (e *NoExecutorError) Unwrap() []error { return []error{errdefs.ErrUnavailable, e.err} }

// TaskLogs reads container id's task log stream ("stdout" or "stderr") from
// offset, from the executor of node (the container's Node): at most
// api.MaxReadChunk bytes. An empty result means the end of the log for now;
// a running task's log grows, so read again later. If no executor answers
// for node the error is a *NoExecutorError.
func (c *Client) TaskLogs(ctx context.Context, node, id, stream string, offset int64) ([]byte, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	if stream != "stdout" && stream != "stderr" {
		return nil, fmt.Errorf("%w: log stream %q: want stdout or stderr", errdefs.ErrInvalidArgument, stream)
	}
	if offset < 0 {
		return nil, fmt.Errorf("%w: negative log offset %d", errdefs.ErrInvalidArgument, offset)
	}
	subject := api.TaskLogsSubject(node)
	data, err := c.requestFrom(ctx, "the executor on node "+node, subject, api.TaskLogsRequest{
		Namespace: c.ns, ID: id, Stream: stream, Offset: offset, Length: api.MaxReadChunk,
	})
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, &NoExecutorError{Node: node, err: err}
	}
	if err != nil {
		return nil, err
	}
	if len(data) > api.MaxReadChunk {
		return nil, fmt.Errorf("%s: %w: chunk of %d bytes exceeds the %d limit", subject, errdefs.ErrDataLoss, len(data), api.MaxReadChunk)
	}
	return data, nil
}

// containerFilter is the subject filter of every event of container id.
func containerFilter(ns, id string) string {
	return events.FilterSubject(ns, events.KindContainer, id, "")
}

// errStop ends a Follow from inside its callback.
var errStop = errors.New("stop following")

// WaitContainer follows the events of container id in namespace ns (empty:
// the client's), read from the log from sequence fromSeq (0 or 1: the
// beginning), and calls until with each, in log order, until it returns
// done or an error; WaitContainer then returns that error. If ctx ends first
// it returns an error wrapping ctx.Err(); if the log cannot be read, one
// wrapping errdefs.ErrUnavailable.
func (c *Client) WaitContainer(ctx context.Context, ns, id string, fromSeq uint64, until func(*events.Envelope) (done bool, err error)) error {
	if ns == "" {
		ns = c.ns
	}
	if err := ValidateContainerID(id); err != nil {
		return err
	}
	if err := events.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var result error
	stopped := false
	cfg := sdjs.FollowConfig{Filters: []string{containerFilter(ns, id)}, StartSeq: fromSeq}
	err := sdjs.Follow(ctx, c.js, cfg, func(ev *events.Envelope) error {
		done, err := until(ev)
		if done || err != nil {
			result, stopped = err, true
			return errStop
		}
		return nil
	})
	switch {
	case stopped:
		return result
	case ctx.Err() != nil:
		return fmt.Errorf("wait for container %s: %w", id, ctx.Err())
	case err != nil:
		return fmt.Errorf("wait for container %s: %w: %w", id, errdefs.ErrUnavailable, err)
	}
	return fmt.Errorf("wait for container %s: %w: the event log ended", id, errdefs.ErrUnavailable)
}

// failure returns the error a container *-failed event carries.
func failure(ev *events.Envelope) error {
	var p events.Failure
	if err := ev.Decode(&p); err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
	}
	return codeError(p.Code, p.Message)
}

// isFailure reports whether t is one of the container *-failed events.
func isFailure(t events.Type) bool {
	switch t {
	case events.TypeContainerCreateFailed, events.TypeTaskStartFailed, events.TypeContainerDeleteFailed:
		return true
	}
	return false
}

// WaitContainerOp follows container id from op.Seq until an event of
// operation op of one of the types want arrives, and returns it. A failure
// event of op (container-create-failed, task-start-failed,
// container-delete-failed) ends the wait with an error carrying its message
// and wrapping the errdefs class of its code, and that event. For example,
// after ContainerDelete wait for events.TypeContainerDeleted; after
// ContainerStart for events.TypeTaskStarted.
func (c *Client) WaitContainerOp(ctx context.Context, id string, op api.OpReply, want ...events.Type) (*events.Envelope, error) {
	var last *events.Envelope
	err := c.WaitContainer(ctx, "", id, op.Seq, func(ev *events.Envelope) (bool, error) {
		if ev.Operation != op.Operation {
			return false, nil
		}
		for _, t := range want {
			if ev.Type == t {
				last = ev
				return true, nil
			}
		}
		if isFailure(ev.Type) {
			last = ev
			return true, failure(ev)
		}
		return false, nil
	})
	return last, err
}

// WaitExit waits until container id's task has exited and returns how it
// ended. It returns at once for a task that already exited (the last run's
// exit, if the task was started more than once). A container that was never
// created, whose last start failed, or that was removed before its task
// exited is an error: errdefs.ErrNotFound for one the log does not know (or
// that was removed), the failure's own class otherwise.
func (c *Client) WaitExit(ctx context.Context, id string) (events.TaskExited, error) {
	if err := ValidateContainerID(id); err != nil {
		return events.TaskExited{}, err
	}
	last, err := sdjs.LastFor(ctx, c.js, containerFilter(c.ns, id))
	if err != nil {
		return events.TaskExited{}, fmt.Errorf("wait for container %s: %w: %w", id, errdefs.ErrUnavailable, err)
	}
	if last == nil {
		return events.TaskExited{}, fmt.Errorf("container %s not found in namespace %s: %w", id, c.ns, errdefs.ErrNotFound)
	}
	// Replay the container's history (a few events) to learn its state as of
	// its last event, then go on live from there: nothing recorded in
	// between is missed.
	var (
		exit             *events.TaskExited // the current run's exit
		everExited       *events.TaskExited
		failed           error // the current run's create or start failure
		deleted, started bool
	)
	err = c.WaitContainer(ctx, "", id, 0, func(ev *events.Envelope) (bool, error) {
		switch ev.Type {
		case events.TypeContainerCreateRequested:
			exit, everExited, failed, deleted, started = nil, nil, nil, false, false
		case events.TypeTaskStartRequested, events.TypeTaskStarted:
			exit, failed, started = nil, nil, true
		case events.TypeTaskExited:
			var p events.TaskExited
			if err := ev.Decode(&p); err != nil {
				return true, fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
			}
			exit, everExited = &p, &p
		case events.TypeContainerCreateFailed, events.TypeTaskStartFailed:
			failed = failure(ev)
		case events.TypeContainerDeleted:
			deleted = true
		}
		if ev.Seq < last.Seq {
			return false, nil // still replaying
		}
		switch {
		case exit != nil:
			return true, nil
		case failed != nil:
			return true, failed
		case deleted && everExited != nil:
			exit = everExited
			return true, nil
		case deleted && started:
			return true, fmt.Errorf("container %s was removed before its task exited: %w", id, errdefs.ErrNotFound)
		case deleted:
			return true, fmt.Errorf("container %s was removed and its task never ran: %w", id, errdefs.ErrNotFound)
		}
		return false, nil
	})
	if err != nil {
		return events.TaskExited{}, err
	}
	return *exit, nil
}
