// Package client is the Go client of Stevedore's gateway. It calls the
// gateway's request/reply API (package api) over NATS and follows an
// operation's events in the log until the operation ends. ctl is a thin front
// over it; tests and other programs use it too.
//
// Containers: the ContainerCreate, ContainerStart, ContainerKill,
// ContainerDelete and ContainerLabel requests are recorded by the gateway and
// carried out by the node's executor, whose events WaitContainer,
// WaitContainerOp and WaitExit follow. Run does what `docker run` does on top
// of them (pull if needed, stdio subscribed before the container is asked
// for, stdin and signals forwarded, the exit code returned); Create and
// StartAttached are its halves. Package clienttest stands in for the gateway
// and an executor in tests.
//
// Errors the gateway reports keep its message and wrap the errdefs class its
// error code names, so callers branch with errors.Is(err, errdefs.ErrNotFound).
// A request nobody answers wraps nats.ErrNoResponders and
// errdefs.ErrUnavailable; for the snapshot calls, which each node's unpacker
// answers, it is a *NoUnpackerError naming the node, and for TaskLogs, which
// the executor answers, a *NoExecutorError.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// ActorHeader is the request header carrying who is asking ("user@host").
const ActorHeader = "Sd-Actor"

// DefaultTimeout is how long a request waits for the gateway's answer when
// neither the context nor WithTimeout says otherwise.
const DefaultTimeout = 10 * time.Second

// Client calls the gateway. It is safe for concurrent use.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	ns      string
	actor   string
	timeout time.Duration
	warn    func(SkippedEvent) // WithWarn; nil: skip quietly
}

type options struct {
	ns      string
	actor   string
	timeout time.Duration
	warn    func(SkippedEvent)
}

// Option configures a Client. Options validate their argument.
type Option func(*options) error

// WithNamespace sets the namespace requests act in (default "default").
func WithNamespace(ns string) Option {
	return func(o *options) error {
		if err := events.ValidateNamespace(ns); err != nil {
			return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
		o.ns = ns
		return nil
	}
}

// WithActor sets who the requests are made by, sent as the Sd-Actor header
// (default "user@hostname").
func WithActor(actor string) Option {
	return func(o *options) error {
		if actor == "" {
			return fmt.Errorf("%w: empty actor", errdefs.ErrInvalidArgument)
		}
		o.actor = actor
		return nil
	}
}

// WithTimeout bounds each request/reply exchange with the gateway when the
// caller's context has no earlier deadline (default DefaultTimeout). It does
// not bound Wait, which lasts as long as the operation.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: timeout must be positive, got %v", errdefs.ErrInvalidArgument, d)
		}
		o.timeout = d
		return nil
	}
}

// New returns a Client over nc. The caller keeps ownership of nc.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("client: %w: nil NATS connection", errdefs.ErrInvalidArgument)
	}
	o := options{ns: events.DefaultNamespace, timeout: DefaultTimeout}
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	if o.actor == "" {
		o.actor = DefaultActor()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	return &Client{nc: nc, js: js, ns: o.ns, actor: o.actor, timeout: o.timeout, warn: o.warn}, nil
}

// Namespace returns the namespace the client acts in.
func (c *Client) Namespace() string { return c.ns }

// Actor returns who the client's requests are made by.
func (c *Client) Actor() string { return c.actor }

// DefaultActor is who a client acts as unless told otherwise: the user
// running it, at this host ("alice@build-01").
func DefaultActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	} else if v := os.Getenv("USER"); v != "" {
		name = v
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return name + "@" + host
}

// remoteError is an error the gateway reported: its message as sent, its
// class from the error code.
type remoteError struct {
	class error
	msg   string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.class }

// codeError builds the error for an errdefs code and message that came over
// the wire (an API error or a failure event).
func codeError(code, msg string) error {
	class := errdefs.FromCode(code)
	if msg == "" {
		msg = class.Error()
	}
	return &remoteError{class: class, msg: msg}
}

// request sends req as JSON to subject and returns the raw reply body.
func (c *Client) request(ctx context.Context, subject string, req any) ([]byte, error) {
	return c.requestFrom(ctx, "the gateway", subject, req)
}

// requestFrom is request to a service other than the gateway; peer names it
// in errors ("the unpacker on node x").
func (c *Client) requestFrom(ctx context.Context, peer, subject string, req any) ([]byte, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", subject, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(ActorHeader, c.actor)
	reply, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%s: %w: %w", subject, errdefs.ErrUnavailable, err)
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("%s: no reply from %s in time: %w: %w", subject, peer, errdefs.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		return nil, codeError(code, reply.Header.Get(micro.ErrorHeader))
	}
	return reply.Data, nil
}

// call sends req to subject and decodes the JSON reply into reply.
func (c *Client) call(ctx context.Context, subject string, req, reply any) error {
	data, err := c.request(ctx, subject, req)
	if err != nil {
		return err
	}
	return decodeReply(subject, data, reply)
}

func decodeReply(subject string, data []byte, reply any) error {
	if err := json.Unmarshal(data, reply); err != nil {
		return fmt.Errorf("%s: decode reply: %w: %w", subject, errdefs.ErrInternal, err)
	}
	return nil
}

// Pull asks the gateway to pull req.Ref. It returns as soon as the pull is
// accepted; follow it with Wait. An empty req.Namespace is the client's.
func (c *Client) Pull(ctx context.Context, req api.PullRequest) (api.OpReply, error) {
	if req.Namespace == "" {
		req.Namespace = c.ns
	}
	var op api.OpReply
	err := c.call(ctx, api.SubjectPull, req, &op)
	return op, err
}

// ImagesList returns the images of the client's namespace.
func (c *Client) ImagesList(ctx context.Context) ([]api.Image, error) {
	var r api.ImagesListReply
	if err := c.call(ctx, api.SubjectImagesList, api.ImagesListRequest{Namespace: c.ns}, &r); err != nil {
		return nil, err
	}
	return r.Images, nil
}

// ImageRemove removes the image name. An unknown name is an error wrapping
// errdefs.ErrNotFound.
func (c *Client) ImageRemove(ctx context.Context, name string) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectImagesRemove, api.ImageRemoveRequest{Namespace: c.ns, Name: name}, &op)
	return op, err
}

// ContentList returns the committed blobs on the gateway's node.
func (c *Client) ContentList(ctx context.Context) ([]content.Info, error) {
	var r api.ContentListReply
	if err := c.call(ctx, api.SubjectContentList, api.ContentListRequest{Namespace: c.ns}, &r); err != nil {
		return nil, err
	}
	return r.Blobs, nil
}

// ContentInfo describes one committed blob, or returns an error wrapping
// errdefs.ErrNotFound.
func (c *Client) ContentInfo(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	var info content.Info
	err := c.call(ctx, api.SubjectContentInfo, api.ContentRequest{Namespace: c.ns, Digest: dgst}, &info)
	return info, err
}

// ContentDelete asks for a blob to be removed. Removal is asynchronous: Wait
// on the returned operation for its blob-deleted or content-delete-failed
// event.
func (c *Client) ContentDelete(ctx context.Context, dgst digest.Digest) (api.OpReply, error) {
	var op api.OpReply
	err := c.call(ctx, api.SubjectContentDelete, api.ContentRequest{Namespace: c.ns, Digest: dgst}, &op)
	return op, err
}

// ContentActive returns the ingests in progress on the gateway's node.
func (c *Client) ContentActive(ctx context.Context) ([]content.Status, error) {
	var r api.ContentActiveReply
	if err := c.call(ctx, api.SubjectContentActive, api.ContentListRequest{Namespace: c.ns}, &r); err != nil {
		return nil, err
	}
	return r.Active, nil
}

// Operation returns the state of operation id, or an error wrapping
// errdefs.ErrNotFound.
func (c *Client) Operation(ctx context.Context, id string) (api.Operation, error) {
	var op api.Operation
	err := c.call(ctx, api.SubjectOperation, api.OperationRequest{Operation: id}, &op)
	return op, err
}

// NoUnpackerError is the error of a snapshot call that no unpacker
// answered: none runs for Node, or Node is misspelt. It wraps
// errdefs.ErrUnavailable and nats.ErrNoResponders.
type NoUnpackerError struct {
	Node string
	err  error
}

func (e *NoUnpackerError) Error() string {
	return fmt.Sprintf("no unpacker answered for node %s (is an unpacker running on %s, under that name?)", e.Node, e.Node)
}

func (e *NoUnpackerError) Unwrap() []error { return []error{errdefs.ErrUnavailable, e.err} }

// checkNode accepts a node name that can be a subject token.
func checkNode(node string) error {
	if node == "" {
		return fmt.Errorf("%w: no node given", errdefs.ErrInvalidArgument)
	}
	if strings.ContainsAny(node, ".*> \t\r\n") {
		return fmt.Errorf("%w: node name %q has a character a node name cannot have (one of . * > or a space)", errdefs.ErrInvalidArgument, node)
	}
	return nil
}

// snapshotCall sends req to node's unpacker endpoint verb and decodes its
// JSON reply into reply.
func (c *Client) snapshotCall(ctx context.Context, node, verb string, req, reply any) error {
	if err := checkNode(node); err != nil {
		return err
	}
	subject := api.SnapshotsSubject(node, verb)
	data, err := c.requestFrom(ctx, "the unpacker on node "+node, subject, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return &NoUnpackerError{Node: node, err: err}
	}
	if err != nil {
		return err
	}
	return decodeReply(subject, data, reply)
}

// SnapshotsList returns the snapshots on node, as its unpacker reports them.
// If no unpacker answers for node the error is a *NoUnpackerError.
func (c *Client) SnapshotsList(ctx context.Context, node string) (api.SnapshotsListReply, error) {
	var r api.SnapshotsListReply
	err := c.snapshotCall(ctx, node, "list", api.SnapshotsListRequest{}, &r)
	if err == nil && r.Snapshots == nil {
		r.Snapshots = []api.Snapshot{}
	}
	return r, err
}

// SnapshotMounts returns how to mount snapshot key on node: the mounts, and
// a mount(8) command line. An unknown key is an error wrapping
// errdefs.ErrNotFound.
func (c *Client) SnapshotMounts(ctx context.Context, node, key string) (api.SnapshotMountsReply, error) {
	var r api.SnapshotMountsReply
	if key == "" {
		return r, fmt.Errorf("%w: no snapshot key given", errdefs.ErrInvalidArgument)
	}
	err := c.snapshotCall(ctx, node, "mounts", api.SnapshotRequest{Key: key}, &r)
	return r, err
}

// SnapshotRemove removes snapshot key from node. The unpacker refuses one
// that a child snapshot or a container uses (an error wrapping
// errdefs.ErrFailedPrecondition, with its message); an unknown key is an
// error wrapping errdefs.ErrNotFound. The removal is recorded in the log as
// snapshot-removed at the returned sequence.
func (c *Client) SnapshotRemove(ctx context.Context, node, key string) (api.SnapshotRemoveReply, error) {
	var r api.SnapshotRemoveReply
	if key == "" {
		return r, fmt.Errorf("%w: no snapshot key given", errdefs.ErrInvalidArgument)
	}
	err := c.snapshotCall(ctx, node, "remove", api.SnapshotRequest{Key: key}, &r)
	return r, err
}
