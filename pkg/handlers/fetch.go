// Package handlers holds the workers' logic as event handlers. Handlers see
// small interfaces only (a publisher, a content store, a registry); the
// adapters for NATS, the filesystem and the registry are wired in cmd/.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
)

// Remote is the registry as the fetcher needs it.
type Remote interface {
	// Resolve returns the descriptor ref names.
	Resolve(ctx context.Context, ref string, plainHTTP bool) (ocispec.Descriptor, error)
	// Fetch opens desc's bytes from offset. start is where the returned
	// stream begins: offset if the registry honoured the range, 0 if not.
	Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, plainHTTP bool) (rc io.ReadCloser, start int64, err error)
}

// ProgressPublisher sends live progress ticks for an operation.
type ProgressPublisher interface {
	PublishProgress(op string, p events.Progress)
}

// Limits bound what a registry can make a fetcher hold in memory.
type Limits struct {
	MaxManifestSize int64 // default 4 MiB
	MaxConfigSize   int64 // default 8 MiB
	MaxDepth        int   // index nesting; default 4
}

// Fetcher handles pull-requested, descriptor-resolved and
// content-delete-requested events: it resolves references, fetches blobs
// into the content store, fans children out as their own units of work and
// records when an image is complete.
type Fetcher struct {
	Remote   Remote
	Store    content.Store
	Pub      events.Publisher
	Progress ProgressPublisher
	Node     string
	Limits   Limits
	Log      zerolog.Logger
	// ProgressInterval is how often a download publishes a tick (default 200ms).
	ProgressInterval time.Duration
	// BusyPoll is how often a fetch waits for another process's ingest of
	// the same blob to finish (default 100ms).
	BusyPoll time.Duration
}

func (f *Fetcher) limits() Limits {
	l := f.Limits
	if l.MaxManifestSize <= 0 {
		l.MaxManifestSize = 4 << 20
	}
	if l.MaxConfigSize <= 0 {
		l.MaxConfigSize = 8 << 20
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 4
	}
	return l
}

// Filters are the subjects the fetcher consumes.
func (f *Fetcher) Filters() []string {
	return []string{
		events.NodeFilterSubject(f.Node, "", events.KindPull, "", events.TypePullRequested),
		events.NodeFilterSubject(f.Node, "", events.KindBlob, "", events.TypeDescriptorResolved),
		events.NodeFilterSubject(f.Node, "", events.KindBlob, "", events.TypeContentDeleteRequested),
	}
}

// Handle implements events.Handler.
func (f *Fetcher) Handle(ctx context.Context, ev *events.Envelope) error {
	switch ev.Type {
	case events.TypePullRequested:
		var p events.PullRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		return f.resolve(ctx, ev, p)
	case events.TypeDescriptorResolved:
		var p events.DescriptorResolved
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		return f.fetch(ctx, ev, p)
	case events.TypeContentDeleteRequested:
		var p events.ContentDeleteRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		return f.deleteContent(ctx, ev, p)
	}
	return nil
}

// OnFailure records a given-up event as the failure of its operation.
func (f *Fetcher) OnFailure(ctx context.Context, ev *events.Envelope, cause error) error {
	m := events.MetaFrom(ev, f.Node)
	var out *events.Envelope
	var err error
	switch ev.Type {
	case events.TypeContentDeleteRequested:
		var p events.ContentDeleteRequested
		_ = ev.Decode(&p)
		out, err = events.New(m, events.TypeContentDeleteFailed, ev.Aggregate, events.ContentDeleteFailed{
			Digest: p.Digest, Code: errdefs.Code(cause), Message: cause.Error(),
		})
	default:
		var p struct {
			Ref        string             `json:"ref"`
			Descriptor ocispec.Descriptor `json:"descriptor"`
		}
		_ = ev.Decode(&p)
		out, err = events.New(m, events.TypePullFailed, events.PullAggregate(ev.Operation), events.PullFailed{
			Ref: p.Ref, Code: errdefs.Code(cause), Message: cause.Error(), Digest: p.Descriptor.Digest,
		})
	}
	if err != nil {
		return err
	}
	if _, err = f.Pub.Publish(ctx, out, events.WithMsgID("failed/"+ev.Operation)); err == nil && out.Type == events.TypePullFailed {
		metrics.PullsFailed.Inc()
	}
	return err
}

func (f *Fetcher) publish(ctx context.Context, ev *events.Envelope, msgID string) error {
	if _, err := f.Pub.Publish(ctx, ev, events.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("record %s: %w", ev.Type, err)
	}
	return nil
}

// classify marks errors that no retry can fix as permanent.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errdefs.ErrUnavailable), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, errdefs.ErrInternal):
		return err
	case errors.Is(err, errdefs.ErrInvalidArgument), errors.Is(err, errdefs.ErrNotFound),
		errors.Is(err, errdefs.ErrUnauthenticated), errors.Is(err, errdefs.ErrPermissionDenied),
		errors.Is(err, errdefs.ErrDataLoss), errors.Is(err, errdefs.ErrResourceExhausted):
		return events.Permanent(err)
	}
	return err
}

func (f *Fetcher) resolve(ctx context.Context, ev *events.Envelope, p events.PullRequested) error {
	platform, err := images.ParsePlatform(p.Platform)
	if err != nil {
		return events.Permanent(fmt.Errorf("pull %s: %w", p.Ref, err))
	}
	desc, err := f.Remote.Resolve(ctx, p.Ref, p.PlainHTTP)
	if err != nil {
		return classify(fmt.Errorf("resolve %s: %w", p.Ref, err))
	}
	f.Log.Debug().Str("ref", p.Ref).Str("digest", desc.Digest.String()).Msg("resolved")

	// Already complete on this node: record the image without fanning out.
	if done, err := f.complete(ctx, ev, p.Ref, desc, p.Platform, platform, p.Unpack); err != nil || done {
		return err
	}
	out, err := events.New(events.MetaFrom(ev, f.Node), events.TypeDescriptorResolved, events.BlobAggregate(desc.Digest), events.DescriptorResolved{
		Ref: p.Ref, Platform: p.Platform, PlainHTTP: p.PlainHTTP, Role: images.RoleOf(desc.MediaType),
		Descriptor: desc, Root: desc.Digest, RootMediaType: desc.MediaType, Unpack: p.Unpack,
	})
	if err != nil {
		return err
	}
	return f.publish(ctx, out, "resolved/"+ev.Operation+"/"+desc.Digest.String()+"/")
}

func (f *Fetcher) fetch(ctx context.Context, ev *events.Envelope, p events.DescriptorResolved) error {
	l := f.limits()
	desc := p.Descriptor
	if err := desc.Digest.Validate(); err != nil {
		return events.Permanent(fmt.Errorf("%s %s: %w: %w", p.Role, desc.Digest, errdefs.ErrInvalidArgument, err))
	}
	if desc.Size < 0 {
		return events.Permanent(fmt.Errorf("%s %s: negative size: %w", p.Role, desc.Digest, errdefs.ErrInvalidArgument))
	}
	switch p.Role {
	case events.RoleIndex, events.RoleManifest:
		if desc.Size > l.MaxManifestSize {
			return events.Permanent(fmt.Errorf("%s %s is %d bytes, over the %d byte limit: %w", p.Role, desc.Digest, desc.Size, l.MaxManifestSize, errdefs.ErrResourceExhausted))
		}
	case events.RoleConfig:
		if desc.Size > l.MaxConfigSize {
			return events.Permanent(fmt.Errorf("config %s is %d bytes, over the %d byte limit: %w", desc.Digest, desc.Size, l.MaxConfigSize, errdefs.ErrResourceExhausted))
		}
	}
	if p.Depth > l.MaxDepth {
		return events.Permanent(fmt.Errorf("%s %s: index nesting deeper than %d: %w", p.Role, desc.Digest, l.MaxDepth, errdefs.ErrResourceExhausted))
	}

	start := time.Now()
	fetched, existing, err := f.ingest(ctx, ev.Operation, p)
	if err != nil {
		return classify(fmt.Errorf("fetch %s %s from %s: %w", p.Role, desc.Digest, p.Ref, err))
	}
	m := events.MetaFrom(ev, f.Node)
	out, err := events.New(m, events.TypeBlobCommitted, events.BlobAggregate(desc.Digest), events.BlobCommitted{
		Ref: p.Ref, Role: p.Role, Descriptor: desc, Existing: existing, Fetched: fetched, Duration: time.Since(start),
		Parent: p.Parent, Unpack: p.Unpack,
	})
	if err != nil {
		return err
	}
	if err := f.publish(ctx, out, "committed/"+ev.Operation+"/"+desc.Digest.String()); err != nil {
		return err
	}
	metrics.BlobsCommitted.WithLabelValues(metrics.Bool(existing)).Inc()
	metrics.BytesFetched.Add(float64(fetched))

	if p.Role == events.RoleConfig {
		// Fail a pull for a platform the image is not built for now, not
		// when its layers are in.
		platform, err := images.ParsePlatform(p.Platform)
		if err != nil {
			return events.Permanent(err)
		}
		blob, err := content.ReadBlob(ctx, f.Store, desc, l.MaxConfigSize)
		if err != nil {
			return classify(fmt.Errorf("read config %s: %w", desc.Digest, err))
		}
		if _, err := images.ConfigPlatform(blob, platform); err != nil {
			return classify(fmt.Errorf("%s: %w", p.Ref, err))
		}
	}

	if p.Role == events.RoleIndex || p.Role == events.RoleManifest {
		platform, err := images.ParsePlatform(p.Platform)
		if err != nil {
			return events.Permanent(err)
		}
		blob, err := content.ReadBlob(ctx, f.Store, desc, l.MaxManifestSize)
		if err != nil {
			return classify(fmt.Errorf("read %s %s: %w", p.Role, desc.Digest, err))
		}
		children, err := images.Children(blob, desc, platform)
		if err != nil {
			return classify(fmt.Errorf("%s %s of %s: %w", p.Role, desc.Digest, p.Ref, err))
		}
		for _, c := range children {
			out, err := events.New(m, events.TypeDescriptorResolved, events.BlobAggregate(c.Descriptor.Digest), events.DescriptorResolved{
				Ref: p.Ref, Platform: p.Platform, PlainHTTP: p.PlainHTTP, Role: c.Role, Descriptor: c.Descriptor,
				Parent: desc.Digest, Root: p.Root, RootMediaType: p.RootMediaType, Depth: p.Depth + 1, Unpack: p.Unpack,
			})
			if err != nil {
				return err
			}
			if err := f.publish(ctx, out, "resolved/"+ev.Operation+"/"+c.Descriptor.Digest.String()+"/"+desc.Digest.String()); err != nil {
				return err
			}
		}
	}

	platform, err := images.ParsePlatform(p.Platform)
	if err != nil {
		return events.Permanent(err)
	}
	root := ocispec.Descriptor{MediaType: p.RootMediaType, Digest: p.Root}
	if p.Depth == 0 {
		root = desc
	}
	_, err = f.complete(ctx, ev, p.Ref, root, p.Platform, platform, p.Unpack)
	return err
}

// ingest makes desc's bytes present in the store. It returns the bytes
// downloaded and whether the blob was already there.
func (f *Fetcher) ingest(ctx context.Context, op string, p events.DescriptorResolved) (int64, bool, error) {
	desc := p.Descriptor
	poll := f.BusyPoll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	for {
		if _, err := f.Store.Info(ctx, desc.Digest); err == nil {
			return 0, true, nil
		}
		w, err := f.Store.Writer(ctx, content.WriterOpts{Ref: desc.Digest.String(), Expected: desc.Digest, Total: desc.Size})
		switch {
		case errors.Is(err, errdefs.ErrAlreadyExists):
			return 0, true, nil
		case errors.Is(err, errdefs.ErrUnavailable):
			// Another fetcher (here or in another process) is downloading
			// this blob: wait for it instead of downloading it twice.
			select {
			case <-ctx.Done():
				return 0, false, ctx.Err()
			case <-time.After(poll):
			}
			continue
		case err != nil:
			return 0, false, err
		}
		n, err := f.download(ctx, op, p, w)
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return n, true, nil
		}
		if err != nil && events.IsPermanent(classify(err)) {
			// No retry will resume this ingest: do not leave it behind. If
			// another writer took it over meanwhile, Abort fails and it stays.
			_ = f.Store.Abort(ctx, desc.Digest.String())
		}
		return n, false, err
	}
}

func (f *Fetcher) download(ctx context.Context, op string, p events.DescriptorResolved, w content.Writer) (int64, error) {
	desc := p.Descriptor
	st, err := w.Status()
	if err != nil {
		w.Close()
		return 0, err
	}
	offset := st.Offset
	if desc.Size > 0 && offset >= desc.Size {
		offset = desc.Size
	}
	var fetched int64
	if offset < desc.Size || desc.Size == 0 {
		rc, start, err := f.Remote.Fetch(ctx, p.Ref, desc, offset, p.PlainHTTP)
		if err != nil {
			w.Close()
			return 0, err
		}
		if start != offset {
			// The registry ignored the range: start over.
			if err := w.Truncate(0); err != nil {
				rc.Close()
				w.Close()
				return 0, err
			}
			offset = 0
		}
		if offset > 0 {
			f.Log.Info().Str("digest", desc.Digest.String()).Int64("offset", offset).Msg("resuming interrupted download")
		}
		pw := &progressWriter{w: w, op: op, pub: f.Progress, every: f.ProgressInterval, tick: events.Progress{
			Digest: desc.Digest, Role: p.Role, Offset: offset, Total: desc.Size, Node: f.Node,
		}}
		fetched, err = copyBuffer(ctx, pw, rc)
		rc.Close()
		pw.flush()
		if err != nil {
			w.Close()
			return fetched, fmt.Errorf("download interrupted at byte %d: %w", offset+fetched, errOrUnexpectedEOF(err))
		}
	}
	err = w.Commit(ctx, desc.Size, desc.Digest, nil)
	return fetched, err
}

func errOrUnexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// copyBuffer copies with a 1 MiB buffer and stops when ctx ends.
func copyBuffer(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		r, rerr := src.Read(buf)
		if r > 0 {
			w, werr := dst.Write(buf[:r])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

type progressWriter struct {
	w     io.Writer
	op    string
	pub   ProgressPublisher
	every time.Duration
	tick  events.Progress
	last  time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.tick.Offset += int64(n)
	if p.pub != nil {
		every := p.every
		if every <= 0 {
			every = 200 * time.Millisecond
		}
		if now := time.Now(); now.Sub(p.last) >= every {
			p.last = now
			p.pub.PublishProgress(p.op, p.tick)
		}
	}
	return n, err
}

func (p *progressWriter) flush() {
	if p.pub != nil {
		p.pub.PublishProgress(p.op, p.tick)
	}
}
