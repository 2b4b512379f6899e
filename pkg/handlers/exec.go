package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/oci"
	"github.com/stevedore/stevedore/pkg/runtime"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// RootfsSnapshots prepares and removes containers' rootfs snapshots (the
// unpacker owns the node's snapshots; the executor asks it).
type RootfsSnapshots interface {
	// Prepare returns the snapshot's mounts and its snapshotter's name.
	Prepare(ctx context.Context, key, parent string, labels map[string]string) ([]snapshots.Mount, string, error)
	Remove(ctx context.Context, key string) error
}

// LastEventFunc returns the last event on the subjects filter matches, or
// nil when there is none.
type LastEventFunc func(ctx context.Context, filter string) (*events.Envelope, error)

// Executor runs a node's containers: it prepares a container's rootfs
// snapshot and bundle, starts and signals its task through the runtime,
// records the task's exit, and removes containers. Its appends for one
// container are serialized against the container's last event, so two
// conflicting requests cannot both win, and a restarted executor records
// what happened while it was down (Reconcile).
type Executor struct {
	Node      string
	Store     content.Store
	Snapshots RootfsSnapshots
	Runtime   runtime.Runtime
	Pub       events.Publisher
	LastEvent LastEventFunc
	// BundleRoot holds bundles at <BundleRoot>/<ns>/<id>.
	BundleRoot string
	// StateRoot holds the runtime's task state dirs at
	// <StateRoot>/<task id> (runtime.TaskID).
	StateRoot string
	NATSURL   string
	Log       zerolog.Logger

	mu       sync.Mutex
	locks    map[string]*sync.Mutex
	watching map[string]bool
	bg       context.Context
	wg       sync.WaitGroup
}

// Filters are the subjects the executor consumes.
func (e *Executor) Filters() []string {
	var f []string
	for _, t := range []events.Type{events.TypeContainerCreateRequested, events.TypeTaskStartRequested, events.TypeTaskKillRequested, events.TypeContainerDeleteRequested} {
		f = append(f, events.NodeFilterSubject(e.Node, "", events.KindContainer, "", t))
	}
	return f
}

// Start sets the context background work (waiting for tasks to exit) runs
// under; call it before handling events. Wait for that work with Wait.
func (e *Executor) Start(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bg = ctx
	e.locks = map[string]*sync.Mutex{}
	e.watching = map[string]bool{}
}

// WaitBackground waits for background work to stop after its context ended.
func (e *Executor) WaitBackground() { e.wg.Wait() }

func (e *Executor) lock(ns, id string) func() {
	key := runtime.TaskID(ns, id)
	e.mu.Lock()
	l, ok := e.locks[key]
	if !ok {
		l = &sync.Mutex{}
		e.locks[key] = l
	}
	e.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (e *Executor) bundle(ns, id string) string { return filepath.Join(e.BundleRoot, ns, id) }

func containerFilter(ns, id string) string {
	return events.FilterSubject(ns, events.KindContainer, id, "")
}

// Handle implements events.Handler. Only this node's requests reach it:
// its consumer filters on the node token of their subjects (Filters).
func (e *Executor) Handle(ctx context.Context, ev *events.Envelope) error {
	switch ev.Type {
	case events.TypeContainerCreateRequested:
		var p events.ContainerCreateRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		defer e.lock(ev.Namespace, p.ID)()
		return e.create(ctx, ev, p)
	case events.TypeTaskStartRequested:
		var p events.TaskStartRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		defer e.lock(ev.Namespace, p.ID)()
		created, err := e.created(ctx, ev.Namespace, p.ID)
		if err != nil || created == nil {
			return e.fail(ctx, ev, p.ID, events.TypeTaskStartFailed, fmt.Errorf("container %s does not exist: %w", p.ID, errdefs.ErrNotFound), err)
		}
		return e.start(ctx, ev, p.ID, p.Stdin, created.Rm)
	case events.TypeTaskKillRequested:
		var p events.TaskKillRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		return e.kill(ctx, ev.Namespace, p)
	case events.TypeContainerDeleteRequested:
		var p events.ContainerDeleteRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		defer e.lock(ev.Namespace, p.ID)()
		return e.delete(ctx, ev, p)
	}
	return nil
}

// OnFailure records a given-up request as the container's or task's failure.
func (e *Executor) OnFailure(ctx context.Context, ev *events.Envelope, cause error) error {
	var p struct {
		ID string `json:"id"`
	}
	_ = ev.Decode(&p)
	t := events.TypeContainerCreateFailed
	switch ev.Type {
	case events.TypeTaskStartRequested:
		t = events.TypeTaskStartFailed
	case events.TypeContainerDeleteRequested:
		t = events.TypeContainerDeleteFailed
	case events.TypeTaskKillRequested:
		e.Log.Warn().Err(cause).Str("id", p.ID).Msg("kill request given up")
		return nil
	}
	return e.record(ctx, ev, p.ID, t, events.Failure{ID: p.ID, Code: errdefs.Code(cause), Message: cause.Error()}, "failed/"+ev.ID)
}

// record appends a fact about container id, caused by cause, serialized
// against the container's last event (retried when another append won the
// race) and deduplicated by msgID.
func (e *Executor) record(ctx context.Context, cause *events.Envelope, id string, t events.Type, payload any, msgID string) error {
	_, err := e.recordAfter(ctx, cause, id, t, payload, msgID, 0)
	return err
}

// recordAfter is record for a caller that knows the container's last
// sequence (after, if not 0): the first attempt expects it without asking
// the log. It returns the new event's sequence.
func (e *Executor) recordAfter(ctx context.Context, cause *events.Envelope, id string, t events.Type, payload any, msgID string, after uint64) (uint64, error) {
	out, err := e.newEvent(cause, id, t, payload)
	if err != nil {
		return 0, err
	}
	filter := containerFilter(cause.Namespace, id)
	for attempt := 0; ; attempt++ {
		last := after
		if attempt > 0 || after == 0 {
			if ev, err := e.LastEvent(ctx, filter); err != nil {
				return 0, err
			} else if ev != nil {
				last = ev.Seq
			} else {
				last = 0
			}
		}
		seq, err := e.appendIfLast(ctx, out, id, msgID, last)
		if errors.Is(err, events.ErrWrongLastSequence) && attempt < 20 {
			continue
		}
		return seq, err
	}
}

// recordIfLast is recordAfter without retries: it appends only if the event
// at sequence last is still the container's last, and otherwise returns an
// error wrapping events.ErrWrongLastSequence.
func (e *Executor) recordIfLast(ctx context.Context, cause *events.Envelope, id string, t events.Type, payload any, msgID string, last uint64) (uint64, error) {
	out, err := e.newEvent(cause, id, t, payload)
	if err != nil {
		return 0, err
	}
	return e.appendIfLast(ctx, out, id, msgID, last)
}

// newEvent builds a fact about container id caused by cause.
func (e *Executor) newEvent(cause *events.Envelope, id string, t events.Type, payload any) (*events.Envelope, error) {
	return events.New(events.MetaFrom(cause, e.Node), t, events.ContainerAggregate(id), payload)
}

// appendIfLast appends out, a fact about container id, only if the event at
// sequence last is the container's last (0: it has none); otherwise it
// returns an error wrapping events.ErrWrongLastSequence and appends nothing.
func (e *Executor) appendIfLast(ctx context.Context, out *events.Envelope, id, msgID string, last uint64) (uint64, error) {
	seq, err := e.Pub.Publish(ctx, out, events.WithMsgID(msgID), events.WithExpectLastSeqFor(last, containerFilter(out.Namespace, id)))
	if err != nil {
		return 0, fmt.Errorf("record %s for %s: %w", out.Type, id, err)
	}
	return seq, nil
}

// async runs f in a goroutine. The function it returns waits for f's
// result and returns it, every time it is called.
func async[T any](f func() (T, error)) func() (T, error) {
	type result struct {
		v   T
		err error
	}
	c := make(chan result, 1)
	go func() {
		v, err := f()
		c <- result{v, err}
	}()
	return sync.OnceValues(func() (T, error) {
		r := <-c
		return r.v, r.err
	})
}

// fail records a failure fact for a request and acknowledges the request:
// the failure is the outcome. lookupErr, if set, is a transient error that
// asks for redelivery instead.
func (e *Executor) fail(ctx context.Context, ev *events.Envelope, id string, t events.Type, cause, lookupErr error) error {
	if lookupErr != nil {
		return lookupErr
	}
	e.Log.Info().Err(cause).Str("id", id).Str("type", string(t)).Msg("request failed")
	return e.record(ctx, ev, id, t, events.Failure{ID: id, Code: errdefs.Code(cause), Message: cause.Error()}, "failed/"+ev.ID)
}

// created returns the container-created payload of id, or nil if the
// container does not exist (never created, or deleted since).
func (e *Executor) created(ctx context.Context, ns, id string) (*events.ContainerCreated, error) {
	last, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeContainerCreated))
	if err != nil || last == nil {
		return nil, err
	}
	deleted, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeContainerDeleted))
	if err != nil {
		return nil, err
	}
	if deleted != nil && deleted.Seq > last.Seq {
		return nil, nil
	}
	var p events.ContainerCreated
	if err := last.Decode(&p); err != nil {
		return nil, err
	}
	return &p, nil
}

func (e *Executor) create(ctx context.Context, ev *events.Envelope, p events.ContainerCreateRequested) error {
	// The image is looked up while the container's history is: two
	// independent reads of the log.
	image := async(func() (events.ImageUpdated, error) { return e.image(ctx, ev.Namespace, p.Image) })
	defer func() { _, _ = image() }() // the lookup ends before the handler does
	// Usually the request is the container's last event: nothing happened
	// since, so this is its first delivery.
	last, err := e.LastEvent(ctx, containerFilter(ev.Namespace, p.ID))
	if err != nil {
		return err
	}
	if last != nil && last.Seq == ev.Seq {
		return e.createNew(ctx, ev, p, image)
	}
	// Redelivered after the container was made (a crash before the ack)?
	if c, err := e.created(ctx, ev.Namespace, p.ID); err != nil {
		return err
	} else if c != nil {
		if p.Start {
			return e.startIfNew(ctx, ev, p.ID, p.Stdin, p.Rm)
		}
		return nil
	}
	if failed, err := e.LastEvent(ctx, events.FilterSubject(ev.Namespace, events.KindContainer, p.ID, events.TypeContainerCreateFailed)); err != nil {
		return err
	} else if failed != nil && failed.Seq > ev.Seq {
		return nil
	}
	return e.createNew(ctx, ev, p, image)
}

// createNew makes the container (and starts it, with p.Start).
// image returns what the node knows of the requested image (see
// Executor.image).
func (e *Executor) createNew(ctx context.Context, ev *events.Envelope, p events.ContainerCreateRequested, image func() (events.ImageUpdated, error)) error {
	created, err := e.prepare(ctx, ev.Namespace, p, image)
	if err != nil {
		e.cleanup(ctx, ev.Namespace, p.ID)
		return e.fail(ctx, ev, p.ID, events.TypeContainerCreateFailed, err, nil)
	}
	seq, err := e.recordAfter(ctx, ev, p.ID, events.TypeContainerCreated, created, "container-created/"+ev.ID, ev.Seq)
	if err != nil {
		return err
	}
	e.Log.Info().Str("id", p.ID).Str("image", p.Image).Msg("container created")
	if p.Start {
		return e.startAfter(ctx, ev, p.ID, p.Stdin, p.Rm, seq)
	}
	return nil
}

// image finds what the node knows of image name: its target, from the last
// image-updated event, unless the name was deleted since.
func (e *Executor) image(ctx context.Context, ns, name string) (events.ImageUpdated, error) {
	agg := events.ImageAggregate(name)
	// Two independent reads of the log: ask them at once.
	lastEvent := async(func() (*events.Envelope, error) {
		return e.LastEvent(ctx, events.FilterSubject(ns, events.KindImage, agg.ID, ""))
	})
	upd, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindImage, agg.ID, events.TypeImageUpdated))
	last, lerr := lastEvent()
	if err == nil {
		err = lerr
	}
	if err != nil {
		return events.ImageUpdated{}, err
	}
	if upd == nil || (last != nil && last.Type == events.TypeImageDeleted) {
		return events.ImageUpdated{}, fmt.Errorf("image %s not found: pull it first: %w", name, errdefs.ErrNotFound)
	}
	var p events.ImageUpdated
	return p, upd.Decode(&p)
}

// resolveImage reads the image's manifest for its platform and its config.
func (e *Executor) resolveImage(ctx context.Context, img events.ImageUpdated) (ocispec.Image, []digest.Digest, error) {
	platform, err := images.ParsePlatform(img.Platform)
	if err != nil {
		return ocispec.Image{}, nil, err
	}
	desc := img.Target
	for depth := 0; depth < 4; depth++ {
		blob, err := content.ReadBlob(ctx, e.Store, desc, images.DefaultMaxManifestSize)
		if err != nil {
			return ocispec.Image{}, nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		children, err := images.Children(blob, desc, platform)
		if err != nil {
			return ocispec.Image{}, nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		if !images.IsIndex(desc.MediaType) {
			for _, c := range children {
				if c.Role != events.RoleConfig {
					continue
				}
				cblob, err := content.ReadBlob(ctx, e.Store, c.Descriptor, images.DefaultMaxConfigSize)
				if err != nil {
					return ocispec.Image{}, nil, fmt.Errorf("image %s config: %w", img.Name, err)
				}
				var cfg ocispec.Image
				if err := json.Unmarshal(cblob, &cfg); err != nil {
					return ocispec.Image{}, nil, fmt.Errorf("image %s config: %v: %w", img.Name, err, errdefs.ErrInvalidArgument)
				}
				return cfg, cfg.RootFS.DiffIDs, nil
			}
			return ocispec.Image{}, nil, fmt.Errorf("image %s has no config: %w", img.Name, errdefs.ErrInvalidArgument)
		}
		if len(children) == 0 {
			return ocispec.Image{}, nil, fmt.Errorf("image %s: no manifest for %s: %w", img.Name, img.Platform, errdefs.ErrNotFound)
		}
		desc = children[0].Descriptor
	}
	return ocispec.Image{}, nil, fmt.Errorf("image %s: index nesting too deep: %w", img.Name, errdefs.ErrResourceExhausted)
}

// prepare makes the container's rootfs snapshot, mounts it into a new
// bundle and writes the runtime spec.
func (e *Executor) prepare(ctx context.Context, ns string, p events.ContainerCreateRequested, image func() (events.ImageUpdated, error)) (events.ContainerCreated, error) {
	img, err := image()
	if err != nil {
		return events.ContainerCreated{}, err
	}
	cfg, diffIDs, err := e.resolveImage(ctx, img)
	if err != nil {
		return events.ContainerCreated{}, err
	}
	if len(diffIDs) == 0 {
		return events.ContainerCreated{}, fmt.Errorf("image %s has no layers: %w", p.Image, errdefs.ErrInvalidArgument)
	}
	chain := snapshots.ChainID(diffIDs)
	top := chain[len(chain)-1]
	// A leftover from an interrupted create of the same id goes first.
	if _, err := os.Stat(e.bundle(ns, p.ID)); err == nil {
		e.cleanup(ctx, ns, p.ID)
	}
	labels := map[string]string{snapshots.ContainerLabel: ns + "/" + p.ID}
	key := runtime.TaskID(ns, p.ID)
	mounts, snapshotter, err := e.Snapshots.Prepare(ctx, key, top.String(), labels)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		e.cleanup(ctx, ns, p.ID)
		mounts, snapshotter, err = e.Snapshots.Prepare(ctx, key, top.String(), labels)
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return events.ContainerCreated{}, fmt.Errorf("image %s is not unpacked on node %s: pull it here first: %w", p.Image, e.Node, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return events.ContainerCreated{}, fmt.Errorf("prepare rootfs: %w", err)
	}
	bundle := e.bundle(ns, p.ID)
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		return events.ContainerCreated{}, fmt.Errorf("bundle: %w", err)
	}
	if err := snapshots.MountAll(mounts, rootfs); err != nil {
		return events.ContainerCreated{}, fmt.Errorf("mount rootfs: %w", err)
	}
	o := p.Options
	opts := oci.Options{
		Args: o.Args, Entrypoint: o.Entrypoint, EntrypointSet: o.EntrypointSet, Env: o.Env, User: o.User,
		WorkingDir: o.WorkingDir, Hostname: o.Hostname, Network: o.Network, ReadOnlyRootfs: o.ReadOnly,
		MemoryLimit: o.MemoryLimit, CPUs: o.CPUs, PidsLimit: o.PidsLimit, Labels: o.Labels,
		CgroupsPath: "/stevedore/" + ns + "/" + p.ID,
	}
	if opts.Hostname == "" {
		opts.Hostname = p.ID[:min(12, len(p.ID))]
	}
	for _, m := range o.Mounts {
		opts.Mounts = append(opts.Mounts, oci.Mount{Type: "bind", Source: m.Source, Destination: m.Destination, ReadOnly: m.ReadOnly})
	}
	spec, err := oci.Generate(ctx, rootfs, cfg.Config, opts)
	if err != nil {
		return events.ContainerCreated{}, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return events.ContainerCreated{}, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), specJSON, 0o644); err != nil {
		return events.ContainerCreated{}, fmt.Errorf("write spec: %w", err)
	}
	return events.ContainerCreated{
		ID: p.ID, Image: p.Image, ImageDigest: img.Target.Digest, ChainID: top, SnapshotKey: key,
		Snapshotter: snapshotter, Spec: specJSON, Labels: o.Labels, Node: e.Node, Rm: p.Rm,
	}, nil
}

// cleanup removes whatever exists of container id on this node: its task,
// mounts, bundle, snapshot and task state. Missing parts are fine. The task
// (runc and its cgroups) and the rootfs are independent once the task has
// exited, so they are torn down at once.
func (e *Executor) cleanup(ctx context.Context, ns, id string) {
	key := runtime.TaskID(ns, id)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := e.Runtime.Delete(ctx, key, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			e.Log.Warn().Err(err).Str("id", id).Msg("cleanup: delete task")
		}
	}()
	rootfs := filepath.Join(e.bundle(ns, id), "rootfs")
	if err := snapshots.UnmountAll(rootfs); err != nil {
		e.Log.Warn().Err(err).Str("id", id).Msg("cleanup: unmount rootfs")
	}
	if err := os.RemoveAll(e.bundle(ns, id)); err != nil {
		e.Log.Warn().Err(err).Str("id", id).Msg("cleanup: remove bundle")
	}
	if err := e.Snapshots.Remove(ctx, key); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		e.Log.Warn().Err(err).Str("id", id).Msg("cleanup: remove rootfs snapshot")
	}
	wg.Wait()
	if e.StateRoot != "" {
		_ = os.RemoveAll(filepath.Join(e.StateRoot, key))
	}
}

// startIfNew starts the task unless a start was already recorded.
func (e *Executor) startIfNew(ctx context.Context, ev *events.Envelope, id string, stdin, rm bool) error {
	started, err := e.LastEvent(ctx, events.FilterSubject(ev.Namespace, events.KindContainer, id, events.TypeTaskStarted))
	if err != nil {
		return err
	}
	if started != nil {
		return nil
	}
	return e.start(ctx, ev, id, stdin, rm)
}

func (e *Executor) start(ctx context.Context, ev *events.Envelope, id string, stdin, rm bool) error {
	return e.startAfter(ctx, ev, id, stdin, rm, 0)
}

// startAfter starts the task; after is the container's last sequence if
// the caller knows it (0 if not).
func (e *Executor) startAfter(ctx context.Context, ev *events.Envelope, id string, stdin, rm bool, after uint64) error {
	ns := ev.Namespace
	key := runtime.TaskID(ns, id)
	pid := 0
	if st, err := e.Runtime.State(ctx, key); err == nil && (st.Status == runtime.StatusRunning || st.Status == runtime.StatusStopped) {
		// The task was started before: by this request (a redelivery),
		// by another one, or before a crash without being recorded.
		started, answered, err := e.startRecorded(ctx, ev, id)
		switch {
		case err != nil:
			return err
		case answered:
			// A redelivery of a request already answered: record nothing
			// again, but make sure the task's exit is recorded.
			if st.Status == runtime.StatusRunning && started != nil && started.Causation == ev.ID {
				e.watch(ev, id, rm, started.Seq)
			}
			return nil
		case st.Status == runtime.StatusRunning && started != nil:
			return e.fail(ctx, ev, id, events.TypeTaskStartFailed, fmt.Errorf("container %s is already running: %w", id, errdefs.ErrFailedPrecondition), nil)
		case st.Status == runtime.StatusRunning:
			// Started before a crash, but not recorded.
			pid = st.Pid
		default:
			return e.fail(ctx, ev, id, events.TypeTaskStartFailed, fmt.Errorf("container %s has already run; create a new one: %w", id, errdefs.ErrFailedPrecondition), nil)
		}
	} else {
		if e.StateRoot != "" {
			_ = os.RemoveAll(filepath.Join(e.StateRoot, key))
		}
		pid, err = e.Runtime.Start(ctx, runtime.CreateOpts{ID: key, Namespace: ns, Container: id, Bundle: e.bundle(ns, id), Stdin: stdin, NATSURL: e.NATSURL})
		if err != nil {
			if ferr := e.fail(ctx, ev, id, events.TypeTaskStartFailed, err, nil); ferr != nil {
				return ferr
			}
			if rm {
				return e.remove(ctx, ev, id, "container-deleted/"+ev.ID)
			}
			return nil
		}
	}
	startedAt := time.Now().UTC()
	seq, err := e.recordAfter(ctx, ev, id, events.TypeTaskStarted, events.TaskStarted{ID: id, Pid: pid, StartedAt: startedAt}, "task-started/"+ev.ID, after)
	if err != nil {
		return err
	}
	metrics.TasksStarted.Inc()
	e.Log.Info().Str("id", id).Int("pid", pid).Msg("task started")
	e.watch(ev, id, rm, seq)
	return nil
}

// startRecorded reads what the log says of container id's task when the
// runtime already has one: started is the last task-started recorded since
// the container was created (nil if none), and answered is true when start
// request ev has been answered already (its task-started or
// task-start-failed is recorded), so that a redelivered request records no
// second fact.
func (e *Executor) startRecorded(ctx context.Context, ev *events.Envelope, id string) (started *events.Envelope, answered bool, err error) {
	ns := ev.Namespace
	last := func(t events.Type) func() (*events.Envelope, error) {
		return async(func() (*events.Envelope, error) {
			return e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, t))
		})
	}
	createdF, startedF, failedF := last(events.TypeContainerCreated), last(events.TypeTaskStarted), last(events.TypeTaskStartFailed)
	created, cerr := createdF()
	started, serr := startedF()
	failed, ferr := failedF()
	if err := errors.Join(cerr, serr, ferr); err != nil {
		return nil, false, err
	}
	if started != nil && created != nil && started.Seq < created.Seq {
		started = nil // a start of an earlier container of the same id
	}
	answered = started != nil && started.Causation == ev.ID || failed != nil && failed.Causation == ev.ID
	return started, answered, nil
}

// watch waits, in the background, for the task to exit and records it.
// started is the sequence of the task-started event, if the caller knows
// it (0 if not).
func (e *Executor) watch(cause *events.Envelope, id string, rm bool, started uint64) {
	key := runtime.TaskID(cause.Namespace, id)
	e.mu.Lock()
	if e.watching[key] {
		e.mu.Unlock()
		return
	}
	e.watching[key] = true
	bg := e.bg
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.watching, key)
			e.mu.Unlock()
		}()
		exit, err := e.Runtime.Wait(bg, key)
		if err != nil {
			if bg.Err() == nil {
				e.Log.Error().Err(err).Str("id", id).Msg("waiting for task")
			}
			return // a restarted executor reconciles it
		}
		e.exited(bg, cause, id, exit, rm, started)
	}()
}

// exited records a task's exit and, for --rm containers, removes them.
// started is the sequence of the task's task-started event, or 0.
func (e *Executor) exited(ctx context.Context, cause *events.Envelope, id string, exit runtime.Exit, rm bool, started uint64) {
	defer e.lock(cause.Namespace, id)()
	// For --rm, the teardown starts at once: the task is gone, whatever the
	// log says next.
	var torn chan struct{}
	if rm {
		torn = make(chan struct{})
		go func() {
			defer close(torn)
			e.cleanup(events.WithCause(ctx, cause), cause.Namespace, id) // snapshot-removed joins cause's operation
		}()
	}
	// Usually the task's start is the container's last event: record the
	// exit right after it while the container is torn down. With the
	// start's sequence known, the append itself checks that nothing came in
	// between; otherwise the log is asked first.
	var (
		seq  uint64
		err  error
		fast bool
	)
	if started != 0 {
		seq, err = e.recordIfLast(ctx, cause, id, events.TypeTaskExited, taskExited(id, exit), exitMsgID(id, started), started)
		fast = !errors.Is(err, events.ErrWrongLastSequence)
	}
	if !fast {
		var last *events.Envelope
		if last, err = e.LastEvent(ctx, containerFilter(cause.Namespace, id)); err == nil && last != nil && last.Type == events.TypeTaskStarted {
			fast = true
			seq, err = e.recordAfter(ctx, cause, id, events.TypeTaskExited, taskExited(id, exit), exitMsgID(id, last.Seq), last.Seq)
		}
	}
	if fast {
		if err != nil {
			e.Log.Error().Err(err).Str("id", id).Msg("recording task exit failed; a restart will reconcile it")
		} else {
			metrics.TasksExited.WithLabelValues(metrics.ExitClass(exit.Code, exit.Signal, exit.OOMKilled)).Inc()
			e.Log.Info().Str("id", id).Int("code", exit.Code).Bool("oom", exit.OOMKilled).Msg("task exited")
		}
		if !rm {
			return
		}
		<-torn
		if err != nil {
			return
		}
		if _, err := e.recordAfter(ctx, cause, id, events.TypeContainerDeleted, events.ContainerDeleted{ID: id}, "container-deleted/rm/"+id, seq); err != nil {
			e.Log.Error().Err(err).Str("id", id).Msg("recording the removal of a --rm container failed")
			return
		}
		e.Log.Info().Str("id", id).Msg("container deleted")
		return
	}
	if torn != nil {
		<-torn
	}
	if err := e.recordExit(ctx, cause, id, exit); err != nil {
		e.Log.Error().Err(err).Str("id", id).Msg("recording task exit failed; a restart will reconcile it")
		return
	}
	if !rm {
		return
	}
	if c, err := e.created(ctx, cause.Namespace, id); err != nil || c == nil {
		return // already removed (a forced delete got there first)
	}
	if err := e.remove(ctx, cause, id, "container-deleted/rm/"+id); err != nil {
		e.Log.Error().Err(err).Str("id", id).Msg("removing --rm container failed")
	}
}

func taskExited(id string, exit runtime.Exit) events.TaskExited {
	return events.TaskExited{
		ID: id, Code: exit.Code, Signal: exit.Signal, OOMKilled: exit.OOMKilled, StartedAt: exit.StartedAt, ExitedAt: exit.ExitedAt,
	}
}

// exitMsgID deduplicates the record of the exit of the task started at
// sequence started.
func exitMsgID(id string, started uint64) string {
	return fmt.Sprintf("task-exited/%s/%d", id, started)
}

// recordExit records the task's exit unless it is recorded already (after
// the last task-started) or the container is gone. Call with the
// container's lock held.
func (e *Executor) recordExit(ctx context.Context, cause *events.Envelope, id string, exit runtime.Exit) error {
	ns := cause.Namespace
	started, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeTaskStarted))
	if err != nil {
		return err
	}
	prev, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeTaskExited))
	if err != nil {
		return err
	}
	if started == nil || (prev != nil && prev.Seq > started.Seq) {
		return nil
	}
	if c, err := e.created(ctx, ns, id); err != nil || c == nil {
		return err
	}
	if err := e.record(ctx, cause, id, events.TypeTaskExited, taskExited(id, exit), exitMsgID(id, started.Seq)); err != nil {
		return err
	}
	metrics.TasksExited.WithLabelValues(metrics.ExitClass(exit.Code, exit.Signal, exit.OOMKilled)).Inc()
	e.Log.Info().Str("id", id).Int("code", exit.Code).Bool("oom", exit.OOMKilled).Msg("task exited")
	return nil
}

func (e *Executor) kill(ctx context.Context, ns string, p events.TaskKillRequested) error {
	sig, err := parseSignal(p.Signal)
	if err != nil {
		return events.Permanent(err)
	}
	if err := e.Runtime.Kill(ctx, runtime.TaskID(ns, p.ID), sig); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, errdefs.ErrFailedPrecondition) {
			e.Log.Info().Err(err).Str("id", p.ID).Msg("kill: task not running")
			return nil
		}
		return err
	}
	return nil
}

func parseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGTERM, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := s
	if len(name) < 3 || name[:3] != "SIG" {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q: %w", s, errdefs.ErrInvalidArgument)
}

func (e *Executor) delete(ctx context.Context, ev *events.Envelope, p events.ContainerDeleteRequested) error {
	key := runtime.TaskID(ev.Namespace, p.ID)
	if st, err := e.Runtime.State(ctx, key); err == nil && st.Status == runtime.StatusRunning {
		if !p.Force {
			return e.fail(ctx, ev, p.ID, events.TypeContainerDeleteFailed, fmt.Errorf("container %s is running: stop it first or use --force: %w", p.ID, errdefs.ErrFailedPrecondition), nil)
		}
		if err := e.Runtime.Kill(ctx, key, syscall.SIGKILL); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		exit, err := e.Runtime.Wait(wctx, key)
		cancel()
		if err == nil {
			// Record the exit here, before the deletion: the watcher waits
			// for this container's lock and then finds it recorded.
			if err := e.recordExit(ctx, ev, p.ID, exit); err != nil {
				return err
			}
		}
	}
	return e.remove(ctx, ev, p.ID, "container-deleted/"+ev.ID)
}

// remove tears the container down and records container-deleted.
func (e *Executor) remove(ctx context.Context, cause *events.Envelope, id, msgID string) error {
	e.cleanup(events.WithCause(ctx, cause), cause.Namespace, id) // snapshot-removed joins cause's operation
	if err := e.record(ctx, cause, id, events.TypeContainerDeleted, events.ContainerDeleted{ID: id}, msgID); err != nil {
		return err
	}
	e.Log.Info().Str("id", id).Msg("container deleted")
	return nil
}

// Reconcile runs once at start: for every container with a bundle on this
// node it compares the log with the runtime and records what happened while
// the executor was down — exits, --rm removals — and resumes waiting for
// tasks that still run.
func (e *Executor) Reconcile(ctx context.Context) error {
	nss, err := os.ReadDir(e.BundleRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, nsd := range nss {
		ids, err := os.ReadDir(filepath.Join(e.BundleRoot, nsd.Name()))
		if err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
		for _, idd := range ids {
			if err := e.reconcileOne(ctx, nsd.Name(), idd.Name()); err != nil {
				e.Log.Error().Err(err).Str("id", idd.Name()).Msg("reconcile failed")
			}
		}
	}
	return nil
}

func (e *Executor) reconcileOne(ctx context.Context, ns, id string) error {
	defer e.lock(ns, id)()
	created, err := e.created(ctx, ns, id)
	if err != nil {
		return err
	}
	if created == nil {
		// No container by the log (create failed, or deleted): a leftover.
		e.Log.Info().Str("id", id).Msg("reconcile: removing leftovers of a container that does not exist")
		e.cleanup(ctx, ns, id)
		return nil
	}
	started, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeTaskStarted))
	if err != nil || started == nil {
		return err // created, never started: nothing to do
	}
	exitedEv, err := e.LastEvent(ctx, events.FilterSubject(ns, events.KindContainer, id, events.TypeTaskExited))
	if err != nil {
		return err
	}
	recorded := exitedEv != nil && exitedEv.Seq > started.Seq
	key := runtime.TaskID(ns, id)
	st, err := e.Runtime.State(ctx, key)
	switch {
	case err == nil && st.Status == runtime.StatusRunning:
		e.Log.Info().Str("id", id).Int("pid", st.Pid).Msg("reconcile: task still running; watching it")
		e.watch(started, id, created.Rm, 0)
	case !recorded:
		exit, ok, xerr := e.Runtime.Exit(ctx, key)
		if xerr != nil || !ok {
			exit = runtime.Exit{Code: -1, Signal: "unknown", ExitedAt: time.Now().UTC()}
		}
		e.Log.Info().Str("id", id).Int("code", exit.Code).Msg("reconcile: task exited while the executor was down")
		if err := e.recordExit(ctx, started, id, exit); err != nil {
			return err
		}
		if created.Rm {
			return e.remove(ctx, started, id, "container-deleted/rm/"+id)
		}
	case created.Rm:
		return e.remove(ctx, started, id, "container-deleted/rm/"+id)
	}
	return nil
}
