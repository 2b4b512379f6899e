package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/remotes"
)

// pull records a pull-requested event for a new operation.
func (g *Gateway) pull(ctx context.Context, req micro.Request) (any, error) {
	var r api.PullRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	ref, err := remotes.ParseReference(r.Ref)
	if err != nil {
		return nil, err
	}
	platSpec := r.Platform
	if platSpec == "" {
		platSpec = g.platform
	}
	plat, err := images.ParsePlatform(platSpec)
	if err != nil {
		return nil, err
	}
	who, err := actor(req)
	if err != nil {
		return nil, err
	}
	if err := g.fetchersAlive(ctx); err != nil {
		return nil, err
	}
	if r.Unpack {
		if err := g.unpackerAlive(ctx, g.cfg.Node); err != nil {
			return nil, fmt.Errorf("no unpacker is running on node %s to unpack the image (start it, e.g. make up, or pull with --no-unpack to only fetch): %w", g.cfg.Node, errdefs.ErrUnavailable)
		}
	}
	op := nuid.Next()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: who, Node: g.cfg.Node},
		events.TypePullRequested, events.PullAggregate(op),
		events.PullRequested{Ref: ref.String(), Platform: plat.String(), Unpack: r.Unpack, PlainHTTP: r.PlainHTTP})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInternal)
	}
	seq, err := g.append(ctx, ev, "pull-requested/"+op)
	if err != nil {
		return nil, err
	}
	return api.OpReply{Operation: op, Seq: seq, Ref: ref.String()}, nil
}

// imagesList lists the namespace's images from the view.
func (g *Gateway) imagesList(ctx context.Context, req micro.Request) (any, error) {
	var r api.ImagesListRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	g.catchUp(ctx)
	imgs, err := g.cfg.View.Images(ns)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return api.ImagesListReply{Images: imgs}, nil
}

// imagesRemove records an image-deleted event for an image in the view. The
// name is looked up as given and, failing that, normalized ("alpine:3" is
// "docker.io/library/alpine:3").
func (g *Gateway) imagesRemove(ctx context.Context, req micro.Request) (any, error) {
	var r api.ImageRemoveRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, fmt.Errorf("no image name given: %w", errdefs.ErrInvalidArgument)
	}
	who, err := actor(req)
	if err != nil {
		return nil, err
	}
	g.catchUp(ctx)
	img, err := g.cfg.View.Image(ns, r.Name)
	if errors.Is(err, errdefs.ErrNotFound) {
		if ref, perr := remotes.ParseReference(r.Name); perr == nil && ref.String() != r.Name {
			img, err = g.cfg.View.Image(ns, ref.String())
		}
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("image %q not found in namespace %q: %w", r.Name, ns, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	op := nuid.Next()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: who, Node: g.cfg.Node},
		events.TypeImageDeleted, events.ImageAggregate(img.Name), events.ImageDeleted{Name: img.Name})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInternal)
	}
	seq, err := g.append(ctx, ev, "image-deleted/"+op)
	if err != nil {
		return nil, err
	}
	return api.OpReply{Operation: op, Seq: seq, Ref: img.Name}, nil
}

// contentList lists the node's committed blobs, sorted by digest.
func (g *Gateway) contentList(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContentListRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if _, err := namespace(r.Namespace); err != nil {
		return nil, err
	}
	blobs := []content.Info{}
	if err := g.cfg.Content.Walk(ctx, func(i content.Info) error {
		blobs = append(blobs, i)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list content: %w", err)
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].Digest < blobs[j].Digest })
	return api.ContentListReply{Blobs: blobs}, nil
}

// contentActive lists the node's active ingests, sorted by ref.
func (g *Gateway) contentActive(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContentListRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if _, err := namespace(r.Namespace); err != nil {
		return nil, err
	}
	st, err := g.cfg.Content.ListStatuses(ctx)
	if err != nil {
		return nil, fmt.Errorf("list active ingests: %w", err)
	}
	if st == nil {
		st = []content.Status{}
	}
	sort.Slice(st, func(i, j int) bool { return st[i].Ref < st[j].Ref })
	return api.ContentActiveReply{Active: st}, nil
}

func checkDigest(d digest.Digest) error {
	if d == "" {
		return fmt.Errorf("no digest given: %w", errdefs.ErrInvalidArgument)
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q is not valid (%w); want algorithm:hex, e.g. sha256:<64 hex digits>: %w", d, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// contentInfo returns one committed blob's info.
func (g *Gateway) contentInfo(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContentRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if _, err := namespace(r.Namespace); err != nil {
		return nil, err
	}
	if err := checkDigest(r.Digest); err != nil {
		return nil, err
	}
	info, err := g.cfg.Content.Info(ctx, r.Digest)
	if err != nil {
		return nil, err
	}
	return info, nil
}

// contentRead returns up to api.MaxReadChunk raw bytes of a blob from
// Offset; an empty body means the end of the blob.
func (g *Gateway) contentRead(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContentReadRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if err := checkDigest(r.Digest); err != nil {
		return nil, err
	}
	if r.Offset < 0 {
		return nil, fmt.Errorf("negative offset %d: %w", r.Offset, errdefs.ErrInvalidArgument)
	}
	n := r.Length
	if n <= 0 || n > api.MaxReadChunk {
		n = api.MaxReadChunk
	}
	ra, err := g.cfg.Content.ReaderAt(ctx, r.Digest)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if r.Offset >= ra.Size() {
		return rawReply{}, nil
	}
	n = min(n, ra.Size()-r.Offset)
	buf := make([]byte, n)
	got, err := ra.ReadAt(buf, r.Offset)
	if err != nil && !(errors.Is(err, io.EOF) && got > 0) {
		return nil, fmt.Errorf("read %s at %d: %w", r.Digest, r.Offset, err)
	}
	return rawReply(buf[:got]), nil
}

// contentDelete records a content-delete-requested event for a committed
// blob; the fetcher removes it.
func (g *Gateway) contentDelete(ctx context.Context, req micro.Request) (any, error) {
	var r api.ContentRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	ns, err := namespace(r.Namespace)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(r.Digest); err != nil {
		return nil, err
	}
	who, err := actor(req)
	if err != nil {
		return nil, err
	}
	if _, err := g.cfg.Content.Info(ctx, r.Digest); err != nil {
		return nil, err
	}
	op := nuid.Next()
	ev, err := events.New(events.Meta{Namespace: ns, Operation: op, Actor: who, Node: g.cfg.Node},
		events.TypeContentDeleteRequested, events.BlobAggregate(r.Digest), events.ContentDeleteRequested{Digest: r.Digest})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInternal)
	}
	seq, err := g.append(ctx, ev, "content-delete-requested/"+op)
	if err != nil {
		return nil, err
	}
	return api.OpReply{Operation: op, Seq: seq, Ref: r.Digest.String()}, nil
}

// opsGet returns one operation from the view.
func (g *Gateway) opsGet(ctx context.Context, req micro.Request) (any, error) {
	var r api.OperationRequest
	if err := decode(req, &r); err != nil {
		return nil, err
	}
	if r.Operation == "" {
		return nil, fmt.Errorf("no operation id given: %w", errdefs.ErrInvalidArgument)
	}
	g.catchUp(ctx)
	op, err := g.cfg.View.Operation(r.Operation)
	if err != nil {
		return nil, err
	}
	return op, nil
}
