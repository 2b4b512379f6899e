package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// LayerSnapshotter is the part of a snapshotter the unpacker needs.
type LayerSnapshotter interface {
	// ApplyLayer makes committed snapshot name from one layer; see
	// snapshots.Snapshotter. An existing name is errdefs.ErrAlreadyExists.
	ApplyLayer(ctx context.Context, name, parent string, labels map[string]string, fill snapshots.FillFunc) (snapshots.Info, error)
	Stat(ctx context.Context, key string) (snapshots.Info, error)
	// ParallelApply reports whether a layer can be applied before its parent.
	ParallelApply() bool
}

// LayerApplier applies one layer's (compressed) bytes to dir, checking its
// uncompressed digest. lowers are the parent layers' dirs, top-most first,
// or nil when they are not there yet; ErrNeedsLowers (wrapping
// errdefs.ErrFailedPrecondition) asks for a retry with them.
type LayerApplier interface {
	ApplyLayer(ctx context.Context, dir string, r io.Reader, diffID digest.Digest, lowers []string) (size int64, err error)
}

// Unpacker turns committed layers into committed snapshots, keyed by
// chainID. With a snapshotter that applies in parallel (overlay), each
// layer is applied as soon as its blob is committed, while other layers are
// still downloading; unpack-requested (sent once every blob is there) then
// waits for the rest, records the image as unpacked and ends the pull.
type Unpacker struct {
	Store       content.Store
	Snapshotter LayerSnapshotter
	Applier     LayerApplier
	Pub         events.Publisher
	// SnapshotterName names the snapshotter in events ("overlay", "native").
	SnapshotterName string
	Node            string
	// Parallel bounds how many layers are applied at once (default: cores).
	Parallel int
	// Poll is how often a layer waits for its config or parent (default 50ms).
	Poll time.Duration
	Log  zerolog.Logger

	once sync.Once
	sem  chan struct{}

	mu      sync.Mutex
	flights map[string]*flight // chainID -> the apply in progress
}

// flight is one apply of a layer that concurrent asks for the same chainID
// share: a layer's blob-committed and its image's unpack-requested both ask
// for it, and both record layer-applied under one message id, so both must
// report what the one apply did.
type flight struct {
	done     chan struct{}
	size     int64
	existing bool
	err      error
}

func (u *Unpacker) init() {
	u.once.Do(func() {
		n := u.Parallel
		if n <= 0 {
			n = runtime.NumCPU()
		}
		u.sem = make(chan struct{}, n)
		u.flights = map[string]*flight{}
		if u.Poll <= 0 {
			u.Poll = 50 * time.Millisecond
		}
	})
}

// Filters are the subjects the unpacker consumes.
func (u *Unpacker) Filters() []string {
	return []string{
		events.NodeFilterSubject(u.Node, "", events.KindBlob, "", events.TypeBlobCommitted),
		events.NodeFilterSubject(u.Node, "", events.KindImage, "", events.TypeUnpackRequested),
	}
}

// Handle implements events.Handler.
func (u *Unpacker) Handle(ctx context.Context, ev *events.Envelope) error {
	u.init()
	switch ev.Type {
	case events.TypeBlobCommitted:
		var p events.BlobCommitted
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		if !p.Unpack || p.Role != events.RoleLayer || p.Parent == "" || !u.Snapshotter.ParallelApply() {
			return nil
		}
		return u.layerCommitted(ctx, ev, p)
	case events.TypeUnpackRequested:
		var p events.UnpackRequested
		if err := ev.Decode(&p); err != nil {
			return events.Permanent(err)
		}
		return u.unpack(ctx, ev, p)
	}
	return nil
}

// OnFailure records a given-up unpack as the failure of its pull.
func (u *Unpacker) OnFailure(ctx context.Context, ev *events.Envelope, cause error) error {
	var p struct {
		Ref string `json:"ref"`
	}
	_ = ev.Decode(&p)
	out, err := events.New(events.MetaFrom(ev, u.Node), events.TypePullFailed, events.PullAggregate(ev.Operation), events.PullFailed{
		Ref: p.Ref, Code: errdefs.Code(cause), Message: cause.Error(),
	})
	if err != nil {
		return err
	}
	if _, err = u.Pub.Publish(ctx, out, events.WithMsgID("failed/"+ev.Operation)); err == nil {
		metrics.PullsFailed.Inc()
	}
	return err
}

// chain is an image's layers as the unpacker needs them.
type chain struct {
	ref      string
	layers   []ocispec.Descriptor
	diffIDs  []digest.Digest
	chainIDs []digest.Digest
}

// layerCommitted applies a layer that just landed, if the image's config is
// (or soon is) there to say where in the chain it goes.
func (u *Unpacker) layerCommitted(ctx context.Context, ev *events.Envelope, p events.BlobCommitted) error {
	mblob, err := content.ReadBlob(ctx, u.Store, ocispec.Descriptor{Digest: p.Parent, Size: u.size(ctx, p.Parent)}, images.DefaultMaxManifestSize)
	if err != nil {
		return classify(fmt.Errorf("read manifest %s: %w", p.Parent, err))
	}
	children, err := images.Children(mblob, ocispec.Descriptor{MediaType: images.SniffMediaType(mblob), Digest: p.Parent, Size: int64(len(mblob))}, images.Platform{})
	if err != nil {
		return classify(fmt.Errorf("manifest %s: %w", p.Parent, err))
	}
	c := chain{ref: p.Ref}
	var config ocispec.Descriptor
	for _, ch := range children {
		switch ch.Role {
		case events.RoleConfig:
			config = ch.Descriptor
		case events.RoleLayer:
			c.layers = append(c.layers, ch.Descriptor)
		}
	}
	// The config is small and fetched alongside; wait for it briefly. If it
	// does not come, unpack-requested applies this layer later.
	var cblob []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		cblob, err = content.ReadBlob(ctx, u.Store, config, images.DefaultMaxConfigSize)
		if err == nil {
			break
		}
		if !errors.Is(err, errdefs.ErrNotFound) || time.Now().After(deadline) {
			return nil
		}
		if err := u.sleep(ctx); err != nil {
			return err
		}
	}
	_, c.diffIDs, err = images.ParseConfig(cblob)
	if err != nil {
		return classify(fmt.Errorf("config %s: %w", config.Digest, err))
	}
	if len(c.diffIDs) != len(c.layers) {
		return events.Permanent(fmt.Errorf("image %s: manifest has %d layers but its config lists %d diff_ids: %w", p.Ref, len(c.layers), len(c.diffIDs), errdefs.ErrInvalidArgument))
	}
	c.chainIDs = snapshots.ChainID(c.diffIDs)
	for i, l := range c.layers {
		if l.Digest != p.Descriptor.Digest {
			continue
		}
		// Don't wait for a parent here: if this layer needs it (a hardlink
		// into a lower layer), unpack-requested applies it in order.
		if err := u.applyAndRecord(ctx, ev, c, i, false); err != nil && !errors.Is(err, errNeedsParent) {
			return err
		}
	}
	return nil
}

func (u *Unpacker) size(ctx context.Context, d digest.Digest) int64 {
	if info, err := u.Store.Info(ctx, d); err == nil {
		return info.Size
	}
	return 0
}

// unpack makes every layer of the image a snapshot, then records the image
// as unpacked and ends the pull.
func (u *Unpacker) unpack(ctx context.Context, ev *events.Envelope, p events.UnpackRequested) error {
	if len(p.DiffIDs) != len(p.Layers) {
		return events.Permanent(fmt.Errorf("image %s: %d layers but %d diff_ids: %w", p.Ref, len(p.Layers), len(p.DiffIDs), errdefs.ErrInvalidArgument))
	}
	c := chain{ref: p.Ref, layers: p.Layers, diffIDs: p.DiffIDs, chainIDs: snapshots.ChainID(p.DiffIDs)}
	if u.Snapshotter.ParallelApply() {
		// A layer waiting for its parent must not wait for ever when a
		// sibling failed: the first failure cancels the rest.
		gctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make([]error, len(c.layers))
		var wg sync.WaitGroup
		for i := range c.layers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if errs[i] = u.applyAndRecordWith(gctx, ctx, ev, c, i, true); errs[i] != nil {
					cancel()
				}
			}()
		}
		wg.Wait()
		if err := firstError(errs); err != nil {
			return err
		}
	} else {
		for i := range c.layers {
			if err := u.applyAndRecord(ctx, ev, c, i, true); err != nil {
				return err
			}
		}
	}
	m := events.MetaFrom(ev, u.Node)
	var top digest.Digest
	if n := len(c.chainIDs); n > 0 {
		top = c.chainIDs[n-1]
	}
	done, err := events.New(m, events.TypeImageUnpacked, ev.Aggregate, events.ImageUnpacked{
		Name: p.Ref, Target: p.Target.Digest, ChainID: top, Layers: len(c.layers), Snapshotter: u.SnapshotterName,
	})
	if err != nil {
		return err
	}
	if _, err := u.Pub.Publish(ctx, done, events.WithMsgID("image-unpacked/"+ev.Operation)); err != nil {
		return fmt.Errorf("record image-unpacked: %w", err)
	}
	end, err := events.New(m, events.TypePullCompleted, events.PullAggregate(ev.Operation), events.PullCompleted{
		Ref: p.Ref, Target: p.Target.Digest, Size: p.Size, Blobs: p.Blobs,
	})
	if err != nil {
		return err
	}
	if _, err := u.Pub.Publish(ctx, end, events.WithMsgID("completed/"+ev.Operation)); err != nil {
		return fmt.Errorf("record pull-completed: %w", err)
	}
	metrics.PullsCompleted.Inc()
	u.Log.Info().Str("ref", p.Ref).Str("op", ev.Operation).Int("layers", len(c.layers)).Msg("image unpacked")
	return nil
}

// firstError returns the first permanent error, else the first error that
// is not a cancellation caused by another's failure.
func firstError(errs []error) error {
	var first, canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case events.IsPermanent(err):
			return err
		case errors.Is(err, context.Canceled):
			// Cancelled because a sibling failed: that failure is the cause.
			if canceled == nil {
				canceled = err
			}
		case first == nil:
			first = err
		}
	}
	if first != nil {
		return first
	}
	return canceled
}

// applyAndRecord applies layer i if its snapshot is not there yet and
// records layer-applied (once per operation and chainID). With wait false
// it returns errNeedsParent instead of waiting for the parent snapshot.
func (u *Unpacker) applyAndRecord(ctx context.Context, ev *events.Envelope, c chain, i int, wait bool) error {
	return u.applyAndRecordWith(ctx, ctx, ev, c, i, wait)
}

// applyAndRecordWith applies under work (which a sibling's failure may
// cancel) but records under rec: a layer that was applied is a fact to
// record even when a sibling failed meanwhile.
func (u *Unpacker) applyAndRecordWith(work, rec context.Context, ev *events.Envelope, c chain, i int, wait bool) error {
	start := time.Now()
	size, existing, err := u.apply(work, c, i, wait)
	if errors.Is(err, errNeedsParent) {
		return err
	}
	if err != nil {
		return classify(fmt.Errorf("unpack layer %d (%s) of %s: %w", i+1, c.layers[i].Digest, c.ref, err))
	}
	var parent digest.Digest
	if i > 0 {
		parent = c.chainIDs[i-1]
	}
	out, err := events.New(events.MetaFrom(ev, u.Node), events.TypeLayerApplied, events.SnapshotAggregate(c.chainIDs[i].String()), events.LayerApplied{
		Ref: c.ref, ChainID: c.chainIDs[i], Parent: parent, DiffID: c.diffIDs[i], Layer: c.layers[i].Digest,
		Index: i, Size: size, Existing: existing, Duration: time.Since(start), Snapshotter: u.SnapshotterName,
	})
	if err != nil {
		return err
	}
	if _, err := u.Pub.Publish(rec, out, events.WithMsgID("layer-applied/"+ev.Operation+"/"+c.chainIDs[i].String())); err != nil {
		return fmt.Errorf("record layer-applied: %w", err)
	}
	metrics.LayersApplied.WithLabelValues(metrics.Bool(existing)).Inc()
	if !existing {
		metrics.LayerBytes.Add(float64(size))
		metrics.LayerDuration.Observe(time.Since(start).Seconds())
	}
	return nil
}

// errNeedsParent: the layer has to wait for its parent snapshot.
var errNeedsParent = errors.New("layer needs its parent snapshot")

// apply makes chainIDs[i] a committed snapshot. It returns the layer's
// uncompressed size (0 if it existed) and whether it existed. Concurrent
// calls for one chainID share one apply and its result, failures included;
// one that finds the apply cancelled, or unable to wait for a parent it can
// wait for, tries itself.
func (u *Unpacker) apply(ctx context.Context, c chain, i int, wait bool) (int64, bool, error) {
	u.init()
	name := c.chainIDs[i].String()
	for {
		u.mu.Lock()
		f, shared := u.flights[name]
		if !shared {
			f = &flight{done: make(chan struct{})}
			u.flights[name] = f
		}
		u.mu.Unlock()
		if !shared {
			f.size, f.existing, f.err = u.applyLeader(ctx, c, i, wait)
			u.mu.Lock()
			delete(u.flights, name)
			u.mu.Unlock()
			close(f.done)
			return f.size, f.existing, f.err
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-f.done:
		}
		// The leader's outcome is this caller's too, unless the leader
		// could not wait for the parent and this caller can, or the
		// leader's work was cancelled (a sibling of its own failed).
		retry := errors.Is(f.err, errNeedsParent) && wait ||
			errors.Is(f.err, context.Canceled) || errors.Is(f.err, context.DeadlineExceeded)
		if !retry {
			return f.size, f.existing, f.err
		}
	}
}

// applyLeader does apply's work for the first caller.
func (u *Unpacker) applyLeader(ctx context.Context, c chain, i int, wait bool) (int64, bool, error) {
	name := c.chainIDs[i].String()
	parent := ""
	if i > 0 {
		parent = c.chainIDs[i-1].String()
	}
	if info, err := u.Snapshotter.Stat(ctx, name); err == nil && info.Kind == snapshots.KindCommitted {
		return 0, true, nil
	}
	// A snapshotter that cannot apply in parallel needs the parent first.
	if parent != "" && !u.Snapshotter.ParallelApply() {
		if !wait {
			return 0, false, errNeedsParent
		}
		if err := u.waitFor(ctx, parent); err != nil {
			return 0, false, err
		}
	}
	for attempt := 0; ; attempt++ {
		size, err := u.applyOnce(ctx, c, i, name, parent)
		switch {
		case errors.Is(err, errdefs.ErrAlreadyExists):
			return 0, true, nil
		case errors.Is(err, errdefs.ErrFailedPrecondition) && parent != "" && attempt == 0:
			// A hardlink into a lower layer: wait for the parent chain and
			// apply again with the lowers.
			if !wait {
				return 0, false, errNeedsParent
			}
			if err := u.waitFor(ctx, parent); err != nil {
				return 0, false, err
			}
			continue
		case err != nil:
			return 0, false, err
		}
		return size, false, nil
	}
}

func (u *Unpacker) applyOnce(ctx context.Context, c chain, i int, name, parent string) (int64, error) {
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-u.sem }()
	layer := c.layers[i]
	var size int64
	_, err := u.Snapshotter.ApplyLayer(ctx, name, parent, map[string]string{
		"stevedore.io/layer": layer.Digest.String(), "stevedore.io/diff-id": c.diffIDs[i].String(),
	}, func(ctx context.Context, dir string, lowers []string) error {
		ra, err := u.Store.ReaderAt(ctx, layer.Digest)
		if err != nil {
			return err
		}
		defer ra.Close()
		size, err = u.Applier.ApplyLayer(ctx, dir, io.NewSectionReader(ra, 0, ra.Size()), c.diffIDs[i], lowers)
		return err
	})
	return size, err
}

// waitFor waits until snapshot key is committed. The parent is applied by
// another handler (its own blob-committed, or this unpack's goroutines).
func (u *Unpacker) waitFor(ctx context.Context, key string) error {
	for {
		info, err := u.Snapshotter.Stat(ctx, key)
		if err == nil && info.Kind == snapshots.KindCommitted {
			return nil
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		if err := u.sleep(ctx); err != nil {
			return fmt.Errorf("waiting for parent snapshot %s: %w", key, err)
		}
	}
}

func (u *Unpacker) sleep(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(u.Poll):
		return nil
	}
}
