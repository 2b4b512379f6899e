package client

import (
	"context"
	"fmt"
	"time"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// ViewAtTimeout bounds a ViewAt request when the caller's context has no
// deadline: the gateway replays the log to answer it, which takes longer
// than an ordinary request.
const ViewAtTimeout = 40 * time.Second

// LogPoint is a point of the log: a sequence, or (if Seq is 0) a time.
type LogPoint struct {
	Seq  uint64
	Time time.Time
}

// String returns the point as a person would write it.
func (p LogPoint) String() string {
	if p.Seq != 0 {
		return fmt.Sprintf("sequence %d", p.Seq)
	}
	return p.Time.Format(time.RFC3339Nano)
}

// ViewAt returns the images or the containers (what is api.ViewAtImages or
// api.ViewAtContainers) of the client's namespace as they were at a past
// point of the log, which the gateway computes by replaying the log into a
// fresh view. At a sequence the answer reflects every event up to and
// including it; at a time, every event up to the first recorded after it.
// A point beyond the end of the log, or a zero point, is an error wrapping
// errdefs.ErrInvalidArgument; a replay that would read more than
// api.MaxViewAtEvents events, one wrapping errdefs.ErrResourceExhausted.
func (c *Client) ViewAt(ctx context.Context, what string, at LogPoint) (api.ViewAtReply, error) {
	var reply api.ViewAtReply
	req := api.ViewAtRequest{Namespace: c.ns, What: what}
	switch {
	case at.Seq != 0:
		req.AtSeq = at.Seq
	case !at.Time.IsZero():
		t := at.Time.UTC()
		req.AtTime = &t
	default:
		return reply, fmt.Errorf("view at: %w: no sequence or time given", errdefs.ErrInvalidArgument)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(c.timeout, ViewAtTimeout))
		defer cancel()
	}
	err := c.call(ctx, api.SubjectViewAt, req, &reply)
	return reply, err
}
