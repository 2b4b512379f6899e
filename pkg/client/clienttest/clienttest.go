// Package clienttest stands in, on a real NATS server, for what the client's
// container calls talk to: the gateway's container, image-list and pull
// endpoints, and one node's executor, which records the events a real one
// would (with the JetStream publisher, in the real log), publishes task
// stdio on the real stdio subjects and serves the task log endpoint. Tasks
// are scripts, not processes, so tests of programs built on package client
// (ctl) can run containers anywhere.
//
// A task runs its command (entrypoint, then args; default "out:hello") as
// steps:
//
//	out:TEXT   write TEXT and a newline to stdout
//	err:TEXT   write TEXT and a newline to stderr
//	lines:N    write N lines ("line 1" …) to stdout, one message each
//	cat        copy stdin to stdout until stdin is closed
//	sleep:MS   sleep MS milliseconds
//	wait       wait for a signal (ctl kill), then exit with 128+signal
//	ignore     ignore every signal but KILL (9), which ends the task
//	exit:N     exit with status N (the default is 0 at the end)
//
// A signal (other than during wait) ends the task with 128+signal before
// its next step. A command whose first word is not a step fails to start
// with runc's "executable file not found" message ("/noexec": "permission
// denied"); an image the fake does not have, or whose name contains
// "broken", fails to create. Pulls complete at once, except those of a
// reference containing "missing" (they fail) or "slow" (they never end).
package clienttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/runtime"
)

// RmDelay is how long the fake executor takes to remove a container after
// its task exited or failed to start (Rm): long enough that a client that
// does not wait for container-deleted is caught.
const RmDelay = 150 * time.Millisecond

// LogChunk is the most bytes one task log reply carries, small so that
// readers must loop.
const LogChunk = 7

// Fake is the stand-in gateway and executor.
type Fake struct {
	t    testing.TB
	nc   *nats.Conn
	pub  *sdjs.Publisher
	node string
	quit chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	containers map[string]*container // by ns/id
	images     []api.Image
	creates    []api.ContainerCreateRequest
	starts     []api.ContainerStartRequest
	kills      []api.ContainerKillRequest
	deletes    []api.ContainerDeleteRequest
	pulls      []api.PullRequest
	pid        int
}

type container struct {
	ns     string
	info   api.Container
	cmd    []string
	stdout bytes.Buffer
	stderr bytes.Buffer
	sigs   chan int
	stdin  []byte
	eof    bool
	done   chan struct{} // closed when the running task exits
}

// Start serves the fake on nc (a connection of its own, closed by the
// caller) for node; images are the images the fake has, unpacked on node.
// Everything stops at test cleanup.
func Start(t testing.TB, nc *nats.Conn, js jetstream.JetStream, node string, images ...string) *Fake {
	t.Helper()
	f := &Fake{t: t, nc: nc, pub: sdjs.NewPublisher(js), node: node, quit: make(chan struct{}), containers: map[string]*container{}}
	for _, name := range images {
		f.images = append(f.images, api.Image{Name: name, Platform: "linux/amd64", Unpacked: []string{node}, UpdatedAt: time.Now()})
	}
	gw, err := micro.AddService(nc, micro.Config{Name: api.ServiceName, Version: api.ServiceVersion})
	if err != nil {
		t.Fatalf("clienttest: add gateway service: %v", err)
	}
	ex, err := micro.AddService(nc, micro.Config{Name: api.ExecutorService, Version: api.ServiceVersion})
	if err != nil {
		t.Fatalf("clienttest: add executor service: %v", err)
	}
	t.Cleanup(func() {
		_ = gw.Stop()
		_ = ex.Stop()
		close(f.quit)
		f.wg.Wait()
	})
	for name, ep := range map[string]struct {
		subject string
		h       func(micro.Request) (any, error)
	}{
		"create": {api.SubjectContainersCreate, f.create},
		"start":  {api.SubjectContainersStart, f.start},
		"kill":   {api.SubjectContainersKill, f.kill},
		"delete": {api.SubjectContainersDelete, f.delete},
		"label":  {api.SubjectContainersLabel, f.label},
		"list":   {api.SubjectContainersList, f.list},
		"info":   {api.SubjectContainersInfo, f.info},
		"images": {api.SubjectImagesList, f.imagesList},
		"pull":   {api.SubjectPull, f.pull},
	} {
		if err := gw.AddEndpoint(name, handler(ep.h), micro.WithEndpointSubject(ep.subject)); err != nil {
			t.Fatalf("clienttest: add endpoint %s: %v", ep.subject, err)
		}
	}
	if err := ex.AddEndpoint("logs", micro.HandlerFunc(f.logs), micro.WithEndpointSubject(api.TaskLogsSubject(node))); err != nil {
		t.Fatalf("clienttest: add logs endpoint: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("clienttest: flush: %v", err)
	}
	return f
}

// apiError is an error reply with an errdefs code.
type apiError struct{ code, msg string }

func (e *apiError) Error() string { return e.msg }

func fail(code, format string, a ...any) error {
	return &apiError{code: code, msg: fmt.Sprintf(format, a...)}
}

func handler(h func(micro.Request) (any, error)) micro.HandlerFunc {
	return func(r micro.Request) {
		reply, err := h(r)
		if err != nil {
			code := "internal"
			if ae, ok := err.(*apiError); ok {
				code = ae.code
			}
			_ = r.Error(code, err.Error(), nil)
			return
		}
		_ = r.RespondJSON(reply)
	}
}

func decode(r micro.Request, v any) error {
	if err := json.Unmarshal(r.Data(), v); err != nil {
		return fail("invalid_argument", "bad request: %v", err)
	}
	return nil
}

func nsOr(ns string) string {
	if ns == "" {
		return events.DefaultNamespace
	}
	return ns
}

// emit records an event in the log and returns its sequence.
func (f *Fake) emit(ns, op string, typ events.Type, id string, payload any) uint64 {
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "test", Node: f.node}, typ, events.ContainerAggregate(id), payload)
	if err == nil {
		var seq uint64
		if seq, err = f.pub.Publish(context.Background(), ev); err == nil {
			return seq
		}
	}
	f.t.Errorf("clienttest: record %s: %v", typ, err)
	return 0
}

func (f *Fake) lookup(ns, id string) (*container, error) {
	c := f.containers[nsOr(ns)+"/"+id]
	if c == nil {
		return nil, fail("not_found", "container %s not found in namespace %s", id, nsOr(ns))
	}
	return c, nil
}

// Put adds a container to the view as it is (for listings); it has no task
// to run.
func (f *Fake) Put(ns string, c api.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[nsOr(ns)+"/"+c.ID] = &container{ns: nsOr(ns), info: c}
}

// Creates returns the create requests received.
func (f *Fake) Creates() []api.ContainerCreateRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.creates)
}

// Starts returns the start requests received.
func (f *Fake) Starts() []api.ContainerStartRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts)
}

// Kills returns the kill requests received.
func (f *Fake) Kills() []api.ContainerKillRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.kills)
}

// Deletes returns the delete requests received.
func (f *Fake) Deletes() []api.ContainerDeleteRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deletes)
}

// Pulls returns the pull requests received.
func (f *Fake) Pulls() []api.PullRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pulls)
}

// Stdin returns what container id's task read from its stdin, and whether
// its stdin was closed.
func (f *Fake) Stdin(ns, id string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(ns, id)
	if err != nil {
		return nil, false
	}
	return slices.Clone(c.stdin), c.eof
}

// Status returns container id's task status (api.TaskRunning, …), or ""
// if there is no such container.
func (f *Fake) Status(ns, id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(ns, id)
	if err != nil {
		return ""
	}
	return c.info.Task.Status
}

// Exists reports whether container id is in the view.
func (f *Fake) Exists(ns, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, err := f.lookup(ns, id)
	return err == nil
}

func (f *Fake) create(r micro.Request) (any, error) {
	var req api.ContainerCreateRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	if req.ID == "" {
		req.ID = strings.ToLower(nuid.Next())
	}
	// As the gateway: the image, by its full name, must be unpacked on the
	// node.
	if !strings.Contains(req.Image, "/") {
		req.Image = "docker.io/library/" + req.Image
	}
	f.mu.Lock()
	f.creates = append(f.creates, req)
	_, err := f.lookup(ns, req.ID)
	known := slices.ContainsFunc(f.images, func(img api.Image) bool {
		return img.Name == req.Image && slices.Contains(img.Unpacked, f.node)
	})
	f.mu.Unlock()
	if !known {
		return nil, fail("not_found", "image %s is not unpacked on node %s: pull it there first", req.Image, f.node)
	}
	if err == nil {
		return nil, fail("already_exists", "container %s already exists", req.ID)
	}
	op := nuid.Next()
	seq := f.emit(ns, op, events.TypeContainerCreateRequested, req.ID, events.ContainerCreateRequested{
		ID: req.ID, Image: req.Image, Node: f.node, Options: req.Options, Rm: req.Rm, Start: req.Start, Stdin: req.Stdin,
	})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.execCreate(ns, op, req)
	}()
	return api.OpReply{Operation: op, Seq: seq}, nil
}

// execCreate is the executor creating (and maybe starting) a container.
func (f *Fake) execCreate(ns, op string, req api.ContainerCreateRequest) {
	f.mu.Lock()
	known := slices.ContainsFunc(f.images, func(img api.Image) bool { return img.Name == req.Image })
	f.mu.Unlock()
	if strings.Contains(req.Image, "broken") {
		f.emit(ns, op, events.TypeContainerCreateFailed, req.ID, events.Failure{ID: req.ID, Code: "data_loss",
			Message: fmt.Sprintf("image %s: a layer does not match its digest", req.Image)})
		return
	}
	if !known {
		f.emit(ns, op, events.TypeContainerCreateFailed, req.ID, events.Failure{ID: req.ID, Code: "not_found",
			Message: fmt.Sprintf("image %s is not unpacked on node %s", req.Image, f.node)})
		return
	}
	cmd := append(slices.Clone(req.Options.Entrypoint), req.Options.Args...)
	if len(cmd) == 0 {
		cmd = []string{"out:hello"}
	}
	spec, _ := json.Marshal(map[string]any{"ociVersion": "1.2.0", "process": map[string]any{"args": cmd, "env": req.Options.Env}})
	c := &container{ns: ns, cmd: cmd, info: api.Container{
		ID: req.ID, Image: req.Image, ImageDigest: digest.FromString(req.Image), Node: f.node,
		SnapshotKey: req.ID, Snapshotter: "overlay", Labels: req.Options.Labels, Rm: req.Rm,
		Created: time.Now().UTC(), Spec: spec, Task: api.Task{Status: api.TaskCreated},
	}}
	f.mu.Lock()
	f.containers[ns+"/"+req.ID] = c
	f.mu.Unlock()
	f.emit(ns, op, events.TypeContainerCreated, req.ID, events.ContainerCreated{
		ID: req.ID, Image: req.Image, ImageDigest: c.info.ImageDigest, Spec: spec, Labels: req.Options.Labels, Node: f.node, Rm: req.Rm,
	})
	if req.Start {
		f.execStart(ns, op, c, req.Stdin)
	}
}

func (f *Fake) start(r micro.Request) (any, error) {
	var req api.ContainerStartRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	f.mu.Lock()
	f.starts = append(f.starts, req)
	c, err := f.lookup(ns, req.ID)
	if err == nil && c.info.Task.Status == api.TaskRunning {
		err = fail("failed_precondition", "container %s is already running", req.ID)
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	op := nuid.Next()
	seq := f.emit(ns, op, events.TypeTaskStartRequested, req.ID, events.TaskStartRequested{ID: req.ID, Node: f.node, Stdin: req.Stdin})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.execStart(ns, op, c, req.Stdin)
	}()
	return api.OpReply{Operation: op, Seq: seq}, nil
}

// execStart is the executor starting a task, which then runs in the
// background.
func (f *Fake) execStart(ns, op string, c *container, stdin bool) {
	id := c.info.ID
	prog := c.cmd[0]
	if !isStep(prog) {
		code, msg := "invalid_argument", fmt.Sprintf(`exec: %q: executable file not found in $PATH`, prog)
		if prog == "/noexec" {
			code, msg = "permission_denied", fmt.Sprintf(`exec: %q: permission denied`, prog)
		}
		f.emit(ns, op, events.TypeTaskStartFailed, id, events.Failure{ID: id, Code: code, Message: msg})
		if c.info.Rm { // the executor removes what it cannot start
			select {
			case <-time.After(RmDelay):
			case <-f.quit:
			}
			f.remove(ns, op, c)
		}
		return
	}
	var in chan *nats.Msg
	if stdin {
		// Subscribed before task-started is recorded, as the monitor is.
		in = make(chan *nats.Msg, 1024)
		sub, err := f.nc.ChanSubscribe(runtime.IOSubject(ns, id, runtime.StreamStdin), in)
		if err != nil {
			f.t.Errorf("clienttest: subscribe stdin: %v", err)
			return
		}
		defer func() { _ = sub.Unsubscribe() }()
		_ = f.nc.Flush()
	}
	f.mu.Lock()
	f.pid++
	started := time.Now().UTC()
	c.info.Task = api.Task{Status: api.TaskRunning, Pid: 1000 + f.pid, StartedAt: started}
	c.sigs = make(chan int, 16)
	c.done = make(chan struct{})
	pid := c.info.Task.Pid
	f.mu.Unlock()
	f.emit(ns, op, events.TypeTaskStarted, id, events.TaskStarted{ID: id, Pid: pid, StartedAt: started})

	code, sig := f.runSteps(ns, c, in)
	// Wait returns once all output was published.
	_ = f.nc.Flush()
	exited := time.Now().UTC()
	f.mu.Lock()
	c.info.Task.Status, c.info.Task.ExitCode, c.info.Task.ExitedAt, c.info.Task.Signal = api.TaskStopped, &code, exited, sig
	rm := c.info.Rm
	f.mu.Unlock()
	f.emit(ns, op, events.TypeTaskExited, id, events.TaskExited{ID: id, Code: code, Signal: sig, StartedAt: started, ExitedAt: exited})
	close(c.done)
	if rm {
		select {
		case <-time.After(RmDelay):
		case <-f.quit:
		}
		f.remove(ns, op, c)
	}
}

func (f *Fake) remove(ns, op string, c *container) {
	f.mu.Lock()
	delete(f.containers, ns+"/"+c.info.ID)
	f.mu.Unlock()
	f.emit(ns, op, events.TypeContainerDeleted, c.info.ID, events.ContainerDeleted{ID: c.info.ID})
}

func isStep(s string) bool {
	name, _, _ := strings.Cut(s, ":")
	switch name {
	case "out", "err", "lines", "cat", "sleep", "wait", "ignore", "exit":
		return true
	}
	return false
}

var signals = map[string]int{"HUP": 1, "INT": 2, "QUIT": 3, "KILL": 9, "USR1": 10, "USR2": 12, "TERM": 15}

func signalNumber(s string) (int, bool) {
	if s == "" {
		return 15, true
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return n, true
	}
	n, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
	return n, ok
}

func signalName(n int) string {
	for name, v := range signals {
		if v == n {
			return "SIG" + name
		}
	}
	return "SIG" + strconv.Itoa(n)
}

// runSteps runs the task's script and returns its exit status.
func (f *Fake) runSteps(ns string, c *container, in <-chan *nats.Msg) (int, string) {
	id := c.info.ID
	write := func(stream string, data string) {
		f.mu.Lock()
		if stream == runtime.StreamStdout {
			c.stdout.WriteString(data)
		} else {
			c.stderr.WriteString(data)
		}
		f.mu.Unlock()
		if err := f.nc.Publish(runtime.IOSubject(ns, id, stream), []byte(data)); err != nil {
			f.t.Errorf("clienttest: publish %s: %v", stream, err)
		}
	}
	killed := func(n int) (int, string) { return 128 + n, signalName(n) }
	for _, step := range c.cmd {
		select {
		case n := <-c.sigs:
			return killed(n)
		default:
		}
		name, arg, _ := strings.Cut(step, ":")
		switch name {
		case "out":
			write(runtime.StreamStdout, arg+"\n")
		case "err":
			write(runtime.StreamStderr, arg+"\n")
		case "lines":
			n, _ := strconv.Atoi(arg)
			for i := 1; i <= n; i++ {
				write(runtime.StreamStdout, fmt.Sprintf("line %d\n", i))
			}
		case "sleep":
			ms, _ := strconv.Atoi(arg)
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case n := <-c.sigs:
				return killed(n)
			case <-f.quit:
				return killed(9)
			}
		case "wait":
			select {
			case n := <-c.sigs:
				return killed(n)
			case <-f.quit:
				return killed(9)
			}
		case "ignore":
			for {
				select {
				case n := <-c.sigs:
					if n == 9 {
						return killed(n)
					}
					continue
				case <-f.quit:
					return killed(9)
				}
			}
		case "cat":
			if in == nil {
				continue // stdin is /dev/null
			}
		copying:
			for {
				select {
				case m := <-in:
					if len(m.Data) > 0 {
						f.mu.Lock()
						c.stdin = append(c.stdin, m.Data...)
						f.mu.Unlock()
						write(runtime.StreamStdout, string(m.Data))
					}
					if m.Header.Get(runtime.HeaderEOF) == "1" {
						f.mu.Lock()
						c.eof = true
						f.mu.Unlock()
						break copying
					}
				case n := <-c.sigs:
					return killed(n)
				case <-f.quit:
					return killed(9)
				}
			}
		case "exit":
			n, _ := strconv.Atoi(arg)
			return n, ""
		}
	}
	return 0, ""
}

func (f *Fake) kill(r micro.Request) (any, error) {
	var req api.ContainerKillRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	n, ok := signalNumber(req.Signal)
	if !ok {
		return nil, fail("invalid_argument", "unknown signal %q", req.Signal)
	}
	f.mu.Lock()
	f.kills = append(f.kills, req)
	c, err := f.lookup(ns, req.ID)
	if err == nil && c.info.Task.Status != api.TaskRunning {
		err = fail("failed_precondition", "container %s is not running", req.ID)
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	op := nuid.Next()
	seq := f.emit(ns, op, events.TypeTaskKillRequested, req.ID, events.TaskKillRequested{ID: req.ID, Node: f.node, Signal: signalName(n)})
	if c.sigs != nil { // nil for a container Put in the view
		c.sigs <- n
	}
	return api.OpReply{Operation: op, Seq: seq}, nil
}

func (f *Fake) delete(r micro.Request) (any, error) {
	var req api.ContainerDeleteRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	f.mu.Lock()
	f.deletes = append(f.deletes, req)
	c, err := f.lookup(ns, req.ID)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	op := nuid.Next()
	seq := f.emit(ns, op, events.TypeContainerDeleteRequested, req.ID, events.ContainerDeleteRequested{ID: req.ID, Node: f.node, Force: req.Force})
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.mu.Lock()
		running, done, rm := c.info.Task.Status == api.TaskRunning && c.done != nil, c.done, c.info.Rm
		f.mu.Unlock()
		if running && !req.Force {
			f.emit(ns, op, events.TypeContainerDeleteFailed, req.ID, events.Failure{ID: req.ID, Code: "failed_precondition",
				Message: fmt.Sprintf("container %s is running: stop it first, or force the removal", req.ID)})
			return
		}
		if running {
			c.sigs <- 9
			<-done
			if rm {
				return // its task's exit removes it
			}
		}
		f.remove(ns, op, c)
	}()
	return api.OpReply{Operation: op, Seq: seq}, nil
}

func (f *Fake) label(r micro.Request) (any, error) {
	var req api.ContainerLabelRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	f.mu.Lock()
	c, err := f.lookup(ns, req.ID)
	var labels map[string]string
	if err == nil {
		if c.info.Labels == nil {
			c.info.Labels = map[string]string{}
		}
		for k, v := range req.Labels {
			if v == "" {
				delete(c.info.Labels, k)
			} else {
				c.info.Labels[k] = v
			}
		}
		labels = maps.Clone(c.info.Labels)
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	op := nuid.Next()
	seq := f.emit(ns, op, events.TypeContainerLabelsUpdated, req.ID, events.ContainerLabelsUpdated{ID: req.ID, Labels: labels})
	return api.OpReply{Operation: op, Seq: seq}, nil
}

func (f *Fake) list(r micro.Request) (any, error) {
	var req api.ContainersListRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []api.Container{}
	for _, c := range f.containers {
		if c.ns == ns {
			info := c.info
			info.Spec = nil
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b api.Container) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return api.ContainersListReply{Containers: out}, nil
}

func (f *Fake) info(r micro.Request) (any, error) {
	var req api.ContainerRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(req.Namespace, req.ID)
	if err != nil {
		return nil, err
	}
	return c.info, nil
}

func (f *Fake) imagesList(micro.Request) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.ImagesListReply{Images: slices.Clone(f.images)}, nil
}

// pull "pulls" any reference except one containing "missing", naming it as
// Docker would ("alpine:1" is "docker.io/library/alpine:1").
func (f *Fake) pull(r micro.Request) (any, error) {
	var req api.PullRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ns := nsOr(req.Namespace)
	f.mu.Lock()
	f.pulls = append(f.pulls, req)
	f.mu.Unlock()
	ref := req.Ref
	if !strings.Contains(ref, "/") {
		ref = "docker.io/library/" + ref
	}
	op := nuid.Next()
	emit := func(typ events.Type, agg events.Aggregate, payload any) uint64 {
		ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: "test", Node: f.node}, typ, agg, payload)
		if err == nil {
			var seq uint64
			if seq, err = f.pub.Publish(context.Background(), ev); err == nil {
				return seq
			}
		}
		f.t.Errorf("clienttest: record %s: %v", typ, err)
		return 0
	}
	seq := emit(events.TypePullRequested, events.PullAggregate(op), events.PullRequested{Ref: ref, Platform: req.Platform, Unpack: req.Unpack})
	if strings.Contains(ref, "slow") {
		return api.OpReply{Operation: op, Seq: seq, Ref: ref}, nil // never ends
	}
	if strings.Contains(ref, "missing") {
		emit(events.TypePullFailed, events.PullAggregate(op), events.PullFailed{Ref: ref, Code: "not_found", Message: ref + ": manifest unknown"})
		return api.OpReply{Operation: op, Seq: seq, Ref: ref}, nil
	}
	f.mu.Lock()
	f.images = append(f.images, api.Image{Name: ref, Platform: req.Platform, Unpacked: []string{f.node}, UpdatedAt: time.Now()})
	f.mu.Unlock()
	emit(events.TypePullCompleted, events.PullAggregate(op), events.PullCompleted{Ref: ref, Target: digest.FromString(ref), Blobs: 1})
	return api.OpReply{Operation: op, Seq: seq, Ref: ref}, nil
}

// logs is the executor's task log endpoint.
func (f *Fake) logs(r micro.Request) {
	var req api.TaskLogsRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil {
		_ = r.Error("invalid_argument", err.Error(), nil)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(req.Namespace, req.ID)
	if err != nil {
		_ = r.Error("not_found", err.Error(), nil)
		return
	}
	var b []byte
	switch req.Stream {
	case runtime.StreamStdout:
		b = c.stdout.Bytes()
	case runtime.StreamStderr:
		b = c.stderr.Bytes()
	default:
		_ = r.Error("invalid_argument", "unknown stream "+req.Stream, nil)
		return
	}
	if req.Offset >= int64(len(b)) {
		_ = r.Respond(nil)
		return
	}
	end := min(int64(len(b)), req.Offset+min(req.Length, LogChunk))
	_ = r.Respond(slices.Clone(b[req.Offset:end]))
}
