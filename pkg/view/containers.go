package view

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// Operation kinds of container and task requests. Each operation's Ref is
// the container id.
const (
	// OpKindContainerCreate is container-create-requested without Start; it
	// completes with container-created and fails with container-create-failed.
	OpKindContainerCreate = "create"
	// OpKindContainerRun is container-create-requested with Start; it
	// completes with task-started and fails with container-create-failed or
	// task-start-failed.
	OpKindContainerRun = "run"
	// OpKindTaskStart is task-start-requested; it completes with
	// task-started and fails with task-start-failed.
	OpKindTaskStart = "start"
	// OpKindTaskKill is task-kill-requested; it completes at once (the
	// signal is sent; task-exited says if the task ended).
	OpKindTaskKill = "kill"
	// OpKindContainerDelete is container-delete-requested; it completes with
	// container-deleted and fails with container-delete-failed.
	OpKindContainerDelete = "delete"
	// OpKindContainerLabel is container-labels-updated; it completes at once.
	OpKindContainerLabel = "label"
)

const prefixCtr = "ctr/"

func containerKey(ns, id string) []byte { return []byte(prefixCtr + ns + "/" + id) }

// createKind is the operation kind of a create: a run if it also starts.
func createKind(start bool) string {
	if start {
		return OpKindContainerRun
	}
	return OpKindContainerCreate
}

// projectContainer applies the container and task events. ok is false for
// other types.
func (v *View) projectContainer(t *tx, ev *events.Envelope, decode func(any) error) (ok bool, err error) {
	at := ev.Time.UTC()
	switch ev.Type {
	case events.TypeContainerCreateRequested:
		var p events.ContainerCreateRequested
		if err := decode(&p); err != nil {
			return true, err
		}
		if ev.Operation == "" {
			return true, nil
		}
		return true, v.startOp(t, api.Operation{
			ID: ev.Operation, Kind: createKind(p.Start), Ref: containerID(ev, p.ID), State: api.OpRunning, Actor: ev.Actor, StartedAt: at,
		})

	case events.TypeContainerCreated:
		var p events.ContainerCreated
		if err := decode(&p); err != nil {
			return true, err
		}
		id := containerID(ev, p.ID)
		if err := checkContainer(ev.Namespace, id); err != nil {
			return true, err
		}
		switch _, err := t.container(ev.Namespace, id); {
		case err == nil:
			// A second created without a delete in between is a duplicate
			// fact: the first one wins, so the task's state stays.
		case errors.Is(err, errdefs.ErrNotFound):
			var labels map[string]string
			if len(p.Labels) > 0 {
				labels = p.Labels
			}
			c := api.Container{
				ID: id, Image: p.Image, ImageDigest: p.ImageDigest, SnapshotKey: p.SnapshotKey, Snapshotter: p.Snapshotter,
				Node: p.Node, Labels: labels, Rm: p.Rm, Created: at, Task: api.Task{Status: api.TaskCreated},
			}
			if len(p.Spec) > 0 && string(p.Spec) != "null" {
				c.Spec = p.Spec
			}
			if err := putJSON(t.w, containerKey(ev.Namespace, id), c); err != nil {
				return true, err
			}
		default:
			return true, err
		}
		return true, v.endContainerOp(t, ev, id, api.OpCompleted, "", "", OpKindContainerCreate)

	case events.TypeContainerCreateFailed:
		var p events.Failure
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.endContainerOp(t, ev, containerID(ev, p.ID), api.OpFailed, p.Code, p.Message,
			OpKindContainerCreate, OpKindContainerRun)

	case events.TypeContainerCreateRefused:
		// The container it names is someone else's: only the refused
		// operation is recorded.
		var p events.ContainerCreateRefused
		if err := decode(&p); err != nil {
			return true, err
		}
		if ev.Operation == "" {
			return true, nil
		}
		return true, v.startOp(t, api.Operation{
			ID: ev.Operation, Kind: createKind(p.Start), Ref: containerID(ev, p.ID), State: api.OpFailed, Code: p.Code, Message: p.Message,
			Actor: ev.Actor, StartedAt: at, EndedAt: at,
		})

	case events.TypeTaskStartRequested:
		var p events.TaskStartRequested
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.requestOp(t, ev, OpKindTaskStart, containerID(ev, p.ID), false)

	case events.TypeTaskStarted:
		var p events.TaskStarted
		if err := decode(&p); err != nil {
			return true, err
		}
		id := containerID(ev, p.ID)
		if err := v.updateContainer(t, ev.Namespace, id, func(c *api.Container) {
			c.Task = api.Task{Status: api.TaskRunning, Pid: p.Pid, StartedAt: p.StartedAt.UTC()}
		}); err != nil {
			return true, err
		}
		return true, v.endContainerOp(t, ev, id, api.OpCompleted, "", "", OpKindTaskStart, OpKindContainerRun)

	case events.TypeTaskStartFailed:
		var p events.Failure
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.endContainerOp(t, ev, containerID(ev, p.ID), api.OpFailed, p.Code, p.Message,
			OpKindTaskStart, OpKindContainerRun)

	case events.TypeTaskKillRequested:
		var p events.TaskKillRequested
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.requestOp(t, ev, OpKindTaskKill, containerID(ev, p.ID), true)

	case events.TypeTaskExited:
		var p events.TaskExited
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.updateContainer(t, ev.Namespace, containerID(ev, p.ID), func(c *api.Container) {
			code := p.Code
			started := c.Task.StartedAt
			if !p.StartedAt.IsZero() {
				started = p.StartedAt.UTC()
			}
			c.Task = api.Task{
				Status: api.TaskStopped, ExitCode: &code, Signal: p.Signal, OOMKilled: p.OOMKilled,
				StartedAt: started, ExitedAt: p.ExitedAt.UTC(),
			}
		})

	case events.TypeContainerDeleteRequested:
		var p events.ContainerDeleteRequested
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.requestOp(t, ev, OpKindContainerDelete, containerID(ev, p.ID), false)

	case events.TypeContainerDeleted:
		var p events.ContainerDeleted
		if err := decode(&p); err != nil {
			return true, err
		}
		id := containerID(ev, p.ID)
		if err := checkContainer(ev.Namespace, id); err != nil {
			return true, err
		}
		if err := t.w.Delete(containerKey(ev.Namespace, id), nil); err != nil {
			return true, fmt.Errorf("delete container: %w", err)
		}
		return true, v.endContainerOp(t, ev, id, api.OpCompleted, "", "", OpKindContainerDelete)

	case events.TypeContainerDeleteFailed:
		var p events.Failure
		if err := decode(&p); err != nil {
			return true, err
		}
		return true, v.endContainerOp(t, ev, containerID(ev, p.ID), api.OpFailed, p.Code, p.Message, OpKindContainerDelete)

	case events.TypeContainerLabelsUpdated:
		var p events.ContainerLabelsUpdated
		if err := decode(&p); err != nil {
			return true, err
		}
		id := containerID(ev, p.ID)
		if err := v.updateContainer(t, ev.Namespace, id, func(c *api.Container) {
			c.Labels = nil
			if len(p.Labels) > 0 {
				c.Labels = p.Labels
			}
		}); err != nil {
			return true, err
		}
		return true, v.requestOp(t, ev, OpKindContainerLabel, id, true)
	}
	return false, nil
}

// containerID is the container an event is about: its payload's id, or
// the aggregate's.
func containerID(ev *events.Envelope, payloadID string) string {
	if payloadID != "" {
		return payloadID
	}
	return ev.Aggregate.ID
}

func checkContainer(ns, id string) error {
	if err := events.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", err, errSkip)
	}
	if id == "" {
		return fmt.Errorf("container event without an id: %w", errSkip)
	}
	return nil
}

// updateContainer changes the stored container ns/id with fn. A container
// not in the view (never created, or deleted since) is left alone.
func (v *View) updateContainer(t *tx, ns, id string, fn func(*api.Container)) error {
	if err := checkContainer(ns, id); err != nil {
		return err
	}
	c, err := t.container(ns, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	fn(&c)
	return putJSON(t.w, containerKey(ns, id), c)
}

// requestOp starts the request's operation, already completed if done.
// Requests without an operation id record none.
func (v *View) requestOp(t *tx, ev *events.Envelope, kind, id string, done bool) error {
	if ev.Operation == "" {
		return nil
	}
	at := ev.Time.UTC()
	op := api.Operation{ID: ev.Operation, Kind: kind, Ref: id, State: api.OpRunning, Actor: ev.Actor, StartedAt: at}
	if done {
		op.State, op.EndedAt = api.OpCompleted, at
	}
	return v.startOp(t, op)
}

// endContainerOp ends the event's operation if it is of one of kinds (an
// executor event carries the operation of the request it answers, so
// container-created of a run must not end the run). An operation not in
// the view is recorded as of kinds[0].
func (v *View) endContainerOp(t *tx, ev *events.Envelope, id, state, code, msg string, kinds ...string) error {
	if ev.Operation == "" {
		return nil
	}
	switch op, err := t.operation(ev.Operation); {
	case errors.Is(err, errdefs.ErrNotFound):
	case err != nil:
		return err
	case !slices.Contains(kinds, op.Kind):
		return nil
	}
	return v.endOp(t, ev.Operation, kinds[0], id, ev, state, code, msg)
}

// Containers returns the containers in namespace ns, oldest first (by
// creation time, then id), without their runtime specs.
func (v *View) Containers(ns string) ([]api.Container, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	out := []api.Container{}
	err := v.scan(prefixCtr+ns+"/", func(k, val []byte) error {
		var c api.Container
		if err := json.Unmarshal(val, &c); err != nil {
			return fmt.Errorf("decode container %s: %w", k, err)
		}
		c.Spec = nil
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b api.Container) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Container returns container id in namespace ns, with its runtime spec,
// or an error wrapping errdefs.ErrNotFound.
func (v *View) Container(ns, id string) (api.Container, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return api.Container{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	var c api.Container
	err := v.getJSON(containerKey(ns, id), fmt.Sprintf("container %q in namespace %q", id, ns), &c)
	return c, err
}
