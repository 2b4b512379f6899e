package nodesvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// Client calls a node's snapshot service; the executor uses it to prepare
// and remove container rootfs snapshots, which the unpacker owns.
type Client struct {
	Conn    *nats.Conn
	Node    string
	Actor   string
	Timeout time.Duration
}

func (c *Client) call(ctx context.Context, verb string, req, reply any, header nats.Header) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(api.SnapshotsSubject(c.Node, verb))
	msg.Data = data
	for k, v := range header {
		msg.Header[k] = v
	}
	if c.Actor != "" {
		msg.Header.Set(ActorHeader, c.Actor)
	}
	// A request made for an event (events.WithCause) is recorded as part of
	// its operation: snapshot-removed then belongs to the operation that
	// removed the container.
	if cs, ok := events.CauseFrom(ctx); ok {
		if cs.Actor != "" {
			msg.Header.Set(ActorHeader, cs.Actor)
		}
		if cs.Operation != "" {
			msg.Header.Set(OperationHeader, cs.Operation)
		}
		if cs.Causation != "" {
			msg.Header.Set(CausationHeader, cs.Causation)
		}
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.Conn.RequestMsgWithContext(ctx, msg)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no unpacker answered for node %s: %w", c.Node, errdefs.ErrUnavailable)
	}
	if err != nil {
		return fmt.Errorf("snapshots %s: %w: %w", verb, errdefs.ErrUnavailable, err)
	}
	if code := resp.Header.Get(micro.ErrorCodeHeader); code != "" {
		return fmt.Errorf("%s: %w", resp.Header.Get(micro.ErrorHeader), errdefs.FromCode(code))
	}
	if reply != nil {
		if err := json.Unmarshal(resp.Data, reply); err != nil {
			return fmt.Errorf("snapshots %s reply: %w", verb, err)
		}
	}
	return nil
}

// Prepare prepares active snapshot key on parent and returns its mounts
// and the name of the snapshotter that holds it.
func (c *Client) Prepare(ctx context.Context, key, parent string, labels map[string]string) ([]snapshots.Mount, string, error) {
	var reply api.SnapshotMountsReply
	if err := c.call(ctx, "prepare", api.SnapshotPrepareRequest{Key: key, Parent: parent, Labels: labels}, &reply, nil); err != nil {
		return nil, "", err
	}
	ms := make([]snapshots.Mount, 0, len(reply.Mounts))
	for _, m := range reply.Mounts {
		ms = append(ms, snapshots.Mount{Type: m.Type, Source: m.Source, Options: m.Options})
	}
	return ms, reply.Snapshotter, nil
}

// Remove removes snapshot key (recorded as snapshot-removed) as part of
// removing the container whose rootfs it is: it sends
// ContainerRemovalHeader, so a snapshot labelled snapshots.ContainerLabel is
// removed too. The removal is recorded with the cause ctx carries (see
// events.WithCause), if any: its operation, actor and causation. Call it only once the container's task is gone and its rootfs
// unmounted. A snapshot that is the parent of another is still refused.
func (c *Client) Remove(ctx context.Context, key string) error {
	return c.call(ctx, "remove", api.SnapshotRequest{Key: key}, nil, nats.Header{ContainerRemovalHeader: []string{"1"}})
}
