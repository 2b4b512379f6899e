package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// Pull policies: when Run and Create pull the image.
const (
	// PullMissing pulls unless the image is unpacked on the node (the default).
	PullMissing = "missing"
	// PullAlways pulls every time (a pull of a present image is quick).
	PullAlways = "always"
	// PullNever never pulls: an image not unpacked on the node is an error.
	PullNever = "never"
)

// Stages of Run, Create and StartAttached, named by RunError.
const (
	StagePull   = "pull"   // getting the image onto the node
	StageCreate = "create" // creating the container
	StageStart  = "start"  // starting its task
	StageWait   = "wait"   // following the task until it exits
	StageRemove = "remove" // removing the container after its task exited (Rm)
)

// ErrInterrupted is wrapped by the error of a Run that a signal stopped
// before it asked for the container.
var ErrInterrupted = errors.New("interrupted")

// RunError is an error of Run, Create or StartAttached: the container, the
// stage that failed and why. Err keeps a failure event's message and wraps
// the errdefs class of its code, so errors.Is(err, errdefs.ErrNotFound)
// works through it.
type RunError struct {
	ID    string
	Stage string
	Err   error
}

func (e *RunError) Error() string {
	switch e.Stage {
	case StagePull:
		return e.Err.Error()
	case StageRemove:
		return fmt.Sprintf("remove container %s: %v", e.ID, e.Err)
	case StageWait:
		return fmt.Sprintf("container %s: %v", e.ID, e.Err)
	}
	return fmt.Sprintf("%s container %s: %v", e.Stage, e.ID, e.Err)
}

func (e *RunError) Unwrap() error { return e.Err }

// PullWatcher follows the pull Run or Create makes, to show its progress.
type PullWatcher interface {
	// Pulling is called once the gateway accepted the pull; op.Ref is the
	// normalized reference.
	Pulling(op api.OpReply)
	// Update receives the pull's events and progress ticks, as Wait's fn.
	Update(u Update)
	// Pulled is called when the pull has ended, with its error.
	Pulled(err error)
}

// PullOptions say how EnsureImage gets an image onto a node.
type PullOptions struct {
	// Ref is the image reference ("alpine:3.20").
	Ref string
	// Platform is "os/arch[/variant]"; empty means the gateway host's.
	Platform string
	// Node is the node the image must be unpacked on; empty means any node
	// (the gateway's node unpacks what it pulls).
	Node string
	// Policy is PullMissing (also ""), PullAlways or PullNever.
	Policy string
	// PlainHTTP allows plain HTTP to a registry that is not on loopback.
	PlainHTTP bool
	// Watcher, if not nil, follows the pull.
	Watcher PullWatcher
}

// EnsureImage makes sure image o.Ref is unpacked on o.Node, pulling it
// (with unpacking) unless the policy says otherwise, and returns the name
// the gateway knows it by ("docker.io/library/alpine:3.20"). A pull that
// fails returns its error (its message, wrapping the errdefs class of its
// code); with PullNever an image that is not there is an error wrapping
// errdefs.ErrNotFound.
func (c *Client) EnsureImage(ctx context.Context, o PullOptions) (string, error) {
	if o.Ref == "" {
		return "", fmt.Errorf("%w: no image given", errdefs.ErrInvalidArgument)
	}
	switch o.Policy {
	case "", PullMissing, PullAlways, PullNever:
	default:
		return "", fmt.Errorf("%w: pull policy %q: want missing, always or never", errdefs.ErrInvalidArgument, o.Policy)
	}
	if o.Policy != PullAlways {
		imgs, err := c.ImagesList(ctx)
		if err != nil {
			return "", fmt.Errorf("look up image %s: %w", o.Ref, err)
		}
		if img := findImage(imgs, o.Ref); img != nil && (o.Platform == "" || img.Platform == o.Platform) &&
			(o.Node == "" && len(img.Unpacked) > 0 || slices.Contains(img.Unpacked, o.Node)) {
			return img.Name, nil
		}
		if o.Policy == PullNever {
			where := "any node"
			if o.Node != "" {
				where = "node " + o.Node
			}
			return "", fmt.Errorf("image %s is not unpacked on %s, and the pull policy is never: %w", o.Ref, where, errdefs.ErrNotFound)
		}
	}
	op, err := c.Pull(ctx, api.PullRequest{Ref: o.Ref, Platform: o.Platform, Unpack: true, PlainHTTP: o.PlainHTTP})
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", o.Ref, err)
	}
	var fn func(Update)
	if o.Watcher != nil {
		o.Watcher.Pulling(op)
		fn = o.Watcher.Update
	}
	_, err = c.Wait(ctx, op, fn)
	if o.Watcher != nil {
		o.Watcher.Pulled(err)
	}
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", o.Ref, err)
	}
	if op.Ref != "" {
		return op.Ref, nil
	}
	return o.Ref, nil
}

// findImage returns the image named ref, as given or as Docker would
// qualify it, or nil.
func findImage(imgs []api.Image, ref string) *api.Image {
	full := dockerName(ref)
	for i := range imgs {
		if imgs[i].Name == ref || imgs[i].Name == full {
			return &imgs[i]
		}
	}
	return nil
}

// dockerName qualifies ref as Docker does: "alpine" is
// "docker.io/library/alpine:latest", "me/app:1" is "docker.io/me/app:1".
// It is a best guess (the gateway normalizes for real): a miss only costs a
// pull.
func dockerName(ref string) string {
	name, dgst, hasDigest := strings.Cut(ref, "@")
	first, rest, hasSlash := strings.Cut(name, "/")
	switch {
	case !hasSlash:
		name = "docker.io/library/" + name
	case first == "docker.io" || first == "index.docker.io":
		if !strings.Contains(rest, "/") {
			rest = "library/" + rest
		}
		name = "docker.io/" + rest
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		name = "docker.io/" + name
	}
	if !hasDigest && !strings.Contains(name[strings.LastIndex(name, "/")+1:], ":") {
		name += ":latest"
	}
	if hasDigest {
		name += "@" + dgst
	}
	return name
}

// AttachOptions connect a task's stdio and signals to the caller.
type AttachOptions struct {
	// Stdin, if not nil, is forwarded to the task's stdin once it started,
	// in chunks, followed by an end-of-file when Stdin is at its end. The
	// task's stdin stays open until then. Run does not wait for a Read of
	// Stdin to return: one that blocks past the task's exit is left behind.
	Stdin io.Reader
	// Stdout and Stderr receive the task's output as it is published
	// (nil: discarded). Writes to them are serialized.
	Stdout, Stderr io.Writer
	// Signals, if not nil, are signal names ("SIGINT") to forward to the
	// task with ContainerKill, as they arrive; those that arrive before the
	// task started are forwarded once it has. Run (not StartAttached) ends
	// with an error wrapping ErrInterrupted if one arrives while it is
	// still getting the image.
	Signals <-chan string
	// Warn, if not nil, is told about problems that do not stop the run: a
	// signal that could not be forwarded, stdin that could not be read.
	Warn func(error)
}

// RunOptions describe a container to run.
type RunOptions struct {
	// Image is the image reference; it is pulled according to Pull.
	Image string
	// ID is the container id; empty picks a random one (NewContainerID).
	ID string
	// Node runs the container; empty means the gateway's node.
	Node string
	// Options are the run options: command, environment, limits, ….
	Options events.ContainerOptions
	// Rm removes the container when its task exits; Run then returns once
	// it is removed.
	Rm bool
	// Detach makes Run return once the task started, with exit code 0.
	Detach bool
	// Pull is the pull policy (PullMissing if empty); PlainHTTP allows
	// plain HTTP to the registry; PullWatcher, if set, follows the pull.
	Pull        string
	PlainHTTP   bool
	PullWatcher PullWatcher

	AttachOptions
}

// request is the create request the options make.
func (o RunOptions) request(id, image string, start bool) api.ContainerCreateRequest {
	return api.ContainerCreateRequest{
		ID: id, Image: image, Node: o.Node, Options: o.Options,
		Rm: o.Rm, Start: start, Stdin: start && o.Stdin != nil,
	}
}

// pull runs EnsureImage for o; a signal on o.Signals stops it with an error
// wrapping ErrInterrupted.
func (c *Client) pull(ctx context.Context, o RunOptions) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		sig  string
		done = make(chan struct{})
		w    = &pullSeen{w: o.PullWatcher}
	)
	if o.Signals != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case s, ok := <-o.Signals:
				if ok {
					sig = s
					cancel()
				}
			case <-done:
			}
		}()
	}
	image, err := c.EnsureImage(ctx, PullOptions{
		Ref: o.Image, Platform: o.Options.Platform, Node: o.Node,
		Policy: o.Pull, PlainHTTP: o.PlainHTTP, Watcher: w,
	})
	close(done)
	wg.Wait()
	switch {
	case sig != "" && w.pulling.Load():
		return "", fmt.Errorf("%w by %s: the pull of %s goes on in the system", ErrInterrupted, sig, o.Image)
	case sig != "":
		return "", fmt.Errorf("%w by %s", ErrInterrupted, sig)
	}
	return image, err
}

// pullSeen passes a pull's progress on to w, if any, and records that a
// pull started.
type pullSeen struct {
	w       PullWatcher
	pulling atomic.Bool
}

func (p *pullSeen) Pulling(op api.OpReply) {
	p.pulling.Store(true)
	if p.w != nil {
		p.w.Pulling(op)
	}
}

func (p *pullSeen) Update(u Update) {
	if p.w != nil {
		p.w.Update(u)
	}
}

func (p *pullSeen) Pulled(err error) {
	if p.w != nil {
		p.w.Pulled(err)
	}
}

// Create creates a container as Run would, without starting its task: it
// gets the image (o.Pull), asks for the container and waits until the
// executor created it. It returns the container's id. Errors are
// *RunError. The attach options are not used.
func (c *Client) Create(ctx context.Context, o RunOptions) (string, error) {
	id := o.ID
	if id == "" {
		id = NewContainerID()
	}
	if err := ValidateContainerID(id); err != nil {
		return "", &RunError{ID: id, Stage: StageCreate, Err: err}
	}
	op, err := c.create(ctx, o, id, false, nil)
	if err != nil {
		return "", err
	}
	if _, err := c.WaitContainerOp(ctx, id, op, events.TypeContainerCreated); err != nil {
		return "", &RunError{ID: id, Stage: StageCreate, Err: err}
	}
	return id, nil
}

// Run runs a container the way `docker run` does, and returns its task's
// exit code:
//
//  1. it gets the image onto the node (o.Pull: by default it pulls, with
//     unpacking, unless the image is unpacked there already);
//  2. it subscribes to the task's stdout and stderr (so no output is
//     missed), then asks for the container to be created and started in one
//     go, with o.Rm and stdin if o.Stdin is set;
//  3. once the task started it forwards o.Stdin and o.Signals to it;
//  4. it follows the container's events until task-exited (and with o.Rm
//     until container-deleted, so nothing is left when it returns), then
//     makes sure every piece of output the server had sent is written to
//     o.Stdout and o.Stderr, and returns the task's exit code (128+n for a
//     task killed by signal n; -1 if the exit status is unknown).
//
// With o.Detach it returns 0 once the task started, without stdio.
//
// Errors are *RunError naming the stage that failed: a failure event
// (container-create-failed, task-start-failed) keeps its message and wraps
// the errdefs class of its code. The exit code is -1 unless the task
// exited; with o.Rm, a task that exited but whose container could not be
// removed gives its exit code and a StageRemove error. If ctx ends first,
// the error wraps ctx.Err() and the container goes on.
func (c *Client) Run(ctx context.Context, o RunOptions) (int, error) {
	id := o.ID
	if id == "" {
		id = NewContainerID()
	}
	if err := ValidateContainerID(id); err != nil {
		return -1, &RunError{ID: id, Stage: StageCreate, Err: err}
	}
	if o.Detach && o.Stdin != nil {
		return -1, &RunError{ID: id, Stage: StageCreate, Err: fmt.Errorf("%w: stdin cannot be forwarded to a detached container", errdefs.ErrInvalidArgument)}
	}
	var s *session
	op, err := c.create(ctx, o, id, true, func() error {
		var err error
		s, err = c.attach(id, o.AttachOptions, !o.Detach)
		return err
	})
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return -1, err
	}
	return s.follow(ctx, op, o.Rm, o.Detach, false)
}

// create gets the image onto the node as o.Pull says and asks for the
// container, calling before (if set) just before the request. Errors are
// *RunError.
//
// With the default policy (pull a missing image) and no platform, the
// container is asked for at once: the gateway refuses, with
// errdefs.ErrNotFound, an image that is not unpacked on the node, and only
// then is it pulled and the container asked for again. The usual run of a
// present image thus skips a round trip and a listing of every image.
func (c *Client) create(ctx context.Context, o RunOptions, id string, start bool, before func() error) (api.OpReply, error) {
	image := o.Image
	direct := (o.Pull == "" || o.Pull == PullMissing) && o.Options.Platform == ""
	if !direct {
		var err error
		if image, err = c.pull(ctx, o); err != nil {
			return api.OpReply{}, &RunError{ID: id, Stage: StagePull, Err: err}
		}
	}
	if before != nil {
		if err := before(); err != nil {
			return api.OpReply{}, &RunError{ID: id, Stage: StageCreate, Err: err}
		}
	}
	op, err := c.ContainerCreate(ctx, o.request(id, image, start))
	if direct && errors.Is(err, errdefs.ErrNotFound) {
		if image, err = c.pull(ctx, o); err != nil {
			return api.OpReply{}, &RunError{ID: id, Stage: StagePull, Err: err}
		}
		op, err = c.ContainerCreate(ctx, o.request(id, image, start))
	}
	if err != nil {
		return api.OpReply{}, &RunError{ID: id, Stage: StageCreate, Err: err}
	}
	return op, nil
}

// StartAttached starts created container id's task with its stdio and
// signals attached, as Run does, and returns its exit code; a container
// created with Rm is waited for until it is removed. Errors from the
// container's start and after are *RunError.
func (c *Client) StartAttached(ctx context.Context, id string, o AttachOptions) (int, error) {
	if err := ValidateContainerID(id); err != nil {
		return -1, err
	}
	ctr, err := c.Container(ctx, id)
	if err != nil {
		return -1, fmt.Errorf("container %s: %w", id, err)
	}
	s, err := c.attach(id, o, true)
	if err != nil {
		return -1, err
	}
	defer s.close()
	op, err := c.ContainerStart(ctx, id, o.Stdin != nil)
	if err != nil {
		return -1, fmt.Errorf("start container %s: %w", id, err)
	}
	return s.follow(ctx, op, ctr.Rm, false, true)
}

// rmAfterFailure is how long Run waits for the executor to remove an Rm
// container whose task could not start.
const rmAfterFailure = 10 * time.Second

// session is one attachment to a task: its stdio subscriptions, and where
// their data goes.
type session struct {
	c      *Client
	id     string
	o      AttachOptions
	subs   []*nats.Subscription
	mu     sync.Mutex // serializes writes; guards closed
	closed bool
}

// attach subscribes to id's stdout and stderr (if stdio) before anything
// can be published there.
func (c *Client) attach(id string, o AttachOptions, stdio bool) (*session, error) {
	s := &session{c: c, id: id, o: o}
	if !stdio {
		return s, nil
	}
	for _, stream := range []struct {
		name string
		w    io.Writer
	}{{runtime.StreamStdout, o.Stdout}, {runtime.StreamStderr, o.Stderr}} {
		w := stream.w
		sub, err := c.nc.Subscribe(runtime.IOSubject(c.ns, id, stream.name), func(m *nats.Msg) { s.write(w, m.Data) })
		if err != nil {
			s.close()
			return nil, fmt.Errorf("subscribe to %s of %s: %w", stream.name, id, err)
		}
		// Output can be large and bursty: hold it rather than drop it.
		_ = sub.SetPendingLimits(-1, 256<<20)
		s.subs = append(s.subs, sub)
	}
	// No flush needed: the server handles a connection's protocol in order,
	// so it has these subscriptions before the request that creates the
	// container, which goes out on the same connection.
	return s, nil
}

func (s *session) write(w io.Writer, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || w == nil {
		return
	}
	_, _ = w.Write(data) // a reader that went away (a closed pipe) does not stop the task
}

func (s *session) warn(err error) {
	if s.o.Warn != nil {
		s.o.Warn(err)
	}
}

// drain writes every stdio message the server sent before now: Flush
// returns once the server answered, so its messages are all queued, and the
// barrier runs once every message queued before it has been handled.
func (s *session) drain() {
	if len(s.subs) == 0 {
		return
	}
	if err := s.c.nc.FlushTimeout(5 * time.Second); err != nil {
		s.warn(fmt.Errorf("the last output of %s may be missing: %w", s.id, err))
		return
	}
	done := make(chan struct{})
	if err := s.c.nc.Barrier(func() { close(done) }); err != nil {
		return
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.warn(fmt.Errorf("the last output of %s may be missing: timed out writing it", s.id))
	}
}

// close unsubscribes; nothing is written after it returns.
func (s *session) close() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// follow follows the container from op until its task exited (and, with
// rm, the container was removed), started (detach), or failed. Before the
// container exists (created false) only op's own events count, so those of
// an earlier container with the same id do not.
func (s *session) follow(ctx context.Context, op api.OpReply, rm, detach, created bool) (int, error) {
	var wg sync.WaitGroup
	finished := make(chan struct{})
	started := make(chan struct{})
	defer wg.Wait()
	defer close(finished)
	if s.o.Signals != nil && !detach {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.forwardSignals(ctx, started, finished)
		}()
	}

	code, exited, isStarted := -1, false, false
	var startErr error // a start failure, reported once an Rm container is removed
	waitCtx, stopWaiting := context.WithCancel(ctx)
	defer stopWaiting()
	var rmTimer *time.Timer
	defer func() {
		if rmTimer != nil {
			rmTimer.Stop()
		}
	}()
	err := s.c.WaitContainer(waitCtx, "", s.id, op.Seq, func(ev *events.Envelope) (bool, error) {
		mine := ev.Operation == op.Operation
		if !created && !mine {
			return false, nil
		}
		switch ev.Type {
		case events.TypeContainerCreated:
			created = true
		case events.TypeContainerCreateFailed:
			if mine {
				return true, &RunError{ID: s.id, Stage: StageCreate, Err: failure(ev)}
			}
		case events.TypeTaskStartFailed:
			if mine || !isStarted {
				startErr = &RunError{ID: s.id, Stage: StageStart, Err: failure(ev)}
				// The executor removes an Rm container whose task could not
				// start: nothing is left once that is recorded.
				if rm {
					rmTimer = time.AfterFunc(rmAfterFailure, stopWaiting) // not forever
					return false, nil
				}
				return true, startErr
			}
		case events.TypeTaskStarted:
			if !isStarted {
				isStarted = true
				close(started)
				if detach {
					return true, nil
				}
				if s.o.Stdin != nil {
					go s.forwardStdin(finished)
				}
			}
		case events.TypeTaskExited:
			var p events.TaskExited
			if err := ev.Decode(&p); err != nil {
				return true, &RunError{ID: s.id, Stage: StageWait, Err: fmt.Errorf("%w: %w", errdefs.ErrInternal, err)}
			}
			code, exited = p.Code, true
			return !rm, nil
		case events.TypeContainerDeleted:
			if exited {
				return true, nil
			}
			if startErr != nil {
				return true, startErr
			}
			return true, &RunError{ID: s.id, Stage: StageWait, Err: fmt.Errorf("the container was removed before its task exited: %w", errdefs.ErrNotFound)}
		case events.TypeContainerDeleteFailed:
			if rm && exited {
				return true, &RunError{ID: s.id, Stage: StageRemove, Err: failure(ev)}
			}
			if rm && startErr != nil {
				return true, startErr
			}
		}
		return false, nil
	})
	if exited {
		s.drain()
	}
	if startErr != nil && ctx.Err() == nil && waitCtx.Err() != nil {
		return code, startErr // its removal was not seen in time
	}
	if err != nil {
		if re := (*RunError)(nil); !errors.As(err, &re) {
			err = &RunError{ID: s.id, Stage: StageWait, Err: err}
		}
		return code, err
	}
	if detach {
		return 0, nil
	}
	return code, nil
}

// forwardSignals sends the signals that arrive to the task, holding those
// that arrive before it started.
func (s *session) forwardSignals(ctx context.Context, started, finished <-chan struct{}) {
	sigs := s.o.Signals
	var pending []string
	kill := func(sig string) {
		if _, err := s.c.ContainerKill(ctx, s.id, sig); err != nil && ctx.Err() == nil {
			s.warn(fmt.Errorf("forward %s to %s: %w", sig, s.id, err))
		}
	}
	for {
		select {
		case <-finished:
			return
		case sig, ok := <-sigs:
			if !ok {
				sigs = nil
				continue
			}
			if started != nil {
				pending = append(pending, sig)
				continue
			}
			kill(sig)
		case <-started:
			started = nil
			for _, sig := range pending {
				kill(sig)
			}
			pending = nil
		}
	}
}

// stdinChunk is the most stdin data one message carries.
const stdinChunk = 32 << 10

// forwardStdin copies Stdin to the task's stdin subject, then closes the
// task's stdin. Each chunk is flushed before the next is read, which paces
// the copy to what the server takes.
func (s *session) forwardStdin(finished <-chan struct{}) {
	subject := runtime.IOSubject(s.c.ns, s.id, runtime.StreamStdin)
	buf := make([]byte, stdinChunk)
	for {
		n, rerr := s.o.Stdin.Read(buf)
		select {
		case <-finished:
			return
		default:
		}
		if n > 0 {
			if err := s.c.nc.Publish(subject, buf[:n]); err != nil {
				s.warn(fmt.Errorf("forward stdin to %s: %w", s.id, err))
				return
			}
			if err := s.c.nc.FlushTimeout(10 * time.Second); err != nil {
				s.warn(fmt.Errorf("forward stdin to %s: %w", s.id, err))
				return
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				s.warn(fmt.Errorf("read stdin for %s: %w (closing its stdin)", s.id, rerr))
			}
			eof := &nats.Msg{Subject: subject, Header: nats.Header{}}
			eof.Header.Set(runtime.HeaderEOF, "1")
			if err := s.c.nc.PublishMsg(eof); err != nil {
				s.warn(fmt.Errorf("close the stdin of %s: %w", s.id, err))
				return
			}
			_ = s.c.nc.FlushTimeout(10 * time.Second)
			return
		}
	}
}
