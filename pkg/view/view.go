// Package view is the gateway's Pebble view: a projection of the events log
// into the images, blobs, containers and operations the API serves.
//
// The view is a pure function of the log. ApplyBatch takes events in log
// order, many per Pebble batch when catching up, and stores, in the same
// batch as their changes, the stream sequence it has applied (design
// invariant 4), so a crash never leaves a change without its watermark or a
// watermark without its change, and re-applying an event is a no-op.
// Every stored value is derived from event data only (never the clock or
// map iteration order), so replaying the same log from zero into an empty
// view yields byte-for-byte the same keys and values, whatever the
// batches; Dump writes them all and Digest hashes them.
//
// Key layout (every key is readable ASCII up to the user-supplied suffix):
//
//	meta/applied                     the applied stream sequence, 8 bytes big-endian
//	img/<ns>/<name>                  api.Image, JSON
//	blob/<digest>                    Blob, JSON
//	op/<id>                          api.Operation, JSON
//	ctr/<ns>/<id>                    api.Container, JSON, with its runtime spec
//	unpk/<chainID>/<ns>/<name>       unpackedAt, JSON: the nodes where the image's
//	                                 top snapshot is chainID, so that
//	                                 snapshot-removed can take them back
//
// An image's Unpacked nodes come from image-unpacked events for its current
// target. An image-updated with another target clears them (the snapshots
// belong to the old target); snapshot-removed of the image's top snapshot on
// a node removes that node.
//
// A container enters the view with container-created (task "created"),
// follows its task through task-started ("running") and task-exited
// ("stopped", with the exit), takes its labels from container-labels-updated
// and leaves with container-deleted. The *-requested events start
// operations that the executor's events end (see the OpKind constants).
package view

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/opencontainers/go-digest"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

// FormatMajorVersion is the Pebble on-disk format the view is pinned to.
// Raising it is a deliberate, one-way migration.
const FormatMajorVersion = pebble.FormatTableFormatV6

// Operation kinds recorded in api.Operation.Kind.
const (
	// OpKindPull is a pull, started by pull-requested.
	OpKindPull = "pull"
	// OpKindContentDelete is a blob removal, started by content-delete-requested.
	OpKindContentDelete = "content-delete"
	// OpKindImagesRemove is an image name removal; it completes with its
	// image-deleted event.
	OpKindImagesRemove = "images-rm"
)

// Key prefixes.
const (
	keyApplied = "meta/applied"
	prefixImg  = "img/"
	prefixBlob = "blob/"
	prefixOp   = "op/"
	prefixUnpk = "unpk/"
)

// Blob is the view of one blob in a node's content store.
type Blob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type,omitempty"`
	// CommittedAt is the time of the first blob-committed event for it.
	CommittedAt time.Time `json:"committed_at"`
	// Node is the node whose blob-committed event first recorded it.
	Node string `json:"node,omitempty"`
}

// options configure Open.
type options struct {
	fs     vfs.FS
	logger zerolog.Logger
}

// Option configures Open.
type Option func(*options) error

// WithFS stores the view on fs instead of the OS filesystem. Tests pass
// vfs.NewMem(); reopening the same MemFS sees what was synced to it.
func WithFS(fs vfs.FS) Option {
	return func(o *options) error {
		if fs == nil {
			return fmt.Errorf("view: nil filesystem: %w", errdefs.ErrInvalidArgument)
		}
		o.fs = fs
		return nil
	}
}

// InMemory stores the view in a fresh in-memory filesystem; it is lost on Close.
func InMemory() Option { return WithFS(vfs.NewMem()) }

// WithLogger sets the logger for skipped events and Pebble's own messages.
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) error { o.logger = l; return nil }
}

// View is a Pebble projection of the events log. Its methods are safe for
// concurrent use; Apply calls are serialized.
type View struct {
	db  *pebble.DB
	log zerolog.Logger

	mu      sync.Mutex // serializes Apply and Close
	applied atomic.Uint64

	notifyMu sync.Mutex    // guards changed and closed
	changed  chan struct{} // closed and replaced whenever applied advances
	closed   bool

	// dbMu keeps db open while a read uses it: reads hold it shared, Close
	// exclusively. (Pebble panics on use after close.)
	dbMu     sync.RWMutex
	dbClosed bool
}

// Open opens (creating if needed) the view stored in dir.
func Open(dir string, opts ...Option) (*View, error) {
	o := options{fs: vfs.Default, logger: zerolog.Nop()}
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	db, err := pebble.Open(dir, &pebble.Options{
		FS:                 o.fs,
		FormatMajorVersion: FormatMajorVersion,
		Logger:             pebbleLogger{o.logger},
	})
	if err != nil {
		return nil, fmt.Errorf("open view %s: %w", dir, err)
	}
	v := &View{db: db, log: o.logger, changed: make(chan struct{})}
	seq, err := v.readApplied()
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	v.applied.Store(seq)
	return v, nil
}

// Close closes the store. Waiters in WaitApplied return an error.
func (v *View) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.notifyMu.Lock()
	if v.closed {
		v.notifyMu.Unlock()
		return nil
	}
	v.closed = true
	close(v.changed)
	v.notifyMu.Unlock()
	v.dbMu.Lock()
	defer v.dbMu.Unlock()
	v.dbClosed = true
	if err := v.db.Close(); err != nil {
		return fmt.Errorf("close view: %w", err)
	}
	return nil
}

func (v *View) readApplied() (uint64, error) { return readWatermark(v.db) }

// readWatermark reads the applied sequence from r (0 if there is none).
func readWatermark(r pebble.Reader) (uint64, error) {
	b, c, err := r.Get([]byte(keyApplied))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read view watermark: %w", err)
	}
	defer c.Close()
	if len(b) != 8 {
		return 0, fmt.Errorf("view watermark has %d bytes, want 8: %w", len(b), errdefs.ErrDataLoss)
	}
	return binary.BigEndian.Uint64(b), nil
}

// AppliedSeq returns the stream sequence of the last applied event (0 for
// none). Following the log from AppliedSeq()+1 resumes the projection.
func (v *View) AppliedSeq() uint64 { return v.applied.Load() }

// WaitApplied blocks until the view has applied seq, ctx ends (its error is
// returned, wrapped) or the view is closed (errdefs.ErrUnavailable).
func (v *View) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		// Take the channel before reading the sequence, so an Apply in
		// between closes the channel we wait on.
		v.notifyMu.Lock()
		ch, closed := v.changed, v.closed
		v.notifyMu.Unlock()
		applied := v.applied.Load()
		if applied >= seq {
			return nil
		}
		if closed {
			return fmt.Errorf("view closed before applying %d: %w", seq, errdefs.ErrUnavailable)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for view to apply %d (applied %d): %w", seq, applied, ctx.Err())
		}
	}
}

// Apply applies one event, which must come from the log with its Seq set,
// in log order: it is ApplyBatch of that one event.
func (v *View) Apply(ev *events.Envelope) error {
	return v.ApplyBatch([]*events.Envelope{ev})
}

// ApplyBatch applies events, which must come from the log with their Seq
// set, in log order. Their changes and the new watermark (the last one's
// sequence) are committed in one Pebble batch with pebble.Sync, so a crash
// keeps all of them or none; a projection catching up applies many events
// per commit. Each event is projected against the view as the events
// before it left it, so applying a log in batches of any size yields the
// same bytes as applying it one event at a time. An event at or below the
// applied sequence (or a sequence earlier in the batch) is skipped, so
// re-applying is harmless. Event types the view does not project, events
// from a newer schema and events whose payload cannot be read only advance
// the watermark (the latter two are logged): the log cannot be changed, so
// the projection must not stall on it.
//
// ApplyBatch returns an error wrapping errdefs.ErrInvalidArgument for an
// event without a sequence, and the store's error if the batch cannot be
// written (nothing is applied then).
func (v *View) ApplyBatch(evs []*events.Envelope) error {
	for _, ev := range evs {
		if ev == nil || ev.Seq == 0 {
			return fmt.Errorf("apply event without a log sequence: %w", errdefs.ErrInvalidArgument)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.notifyMu.Lock()
	closed := v.closed
	v.notifyMu.Unlock()
	if closed {
		return fmt.Errorf("apply event %d: view closed: %w", evs[0].Seq, errdefs.ErrUnavailable)
	}
	last := v.applied.Load()
	// b holds the batch's changes so far and reads through to the store:
	// each event's projection sees every earlier event. Each event writes
	// to its own batch first, so that an event that turns out unusable
	// leaves no partial change behind.
	b := v.db.NewIndexedBatch()
	defer b.Close()
	one := v.db.NewBatch()
	defer one.Close()
	t := &tx{r: b, w: one}
	n := 0
	for _, ev := range evs {
		if ev.Seq <= last {
			continue
		}
		if err := v.project(t, ev); errors.Is(err, errSkip) {
			// The event is unusable; record that it was seen and move on.
			v.log.Warn().Err(err).Uint64("seq", ev.Seq).Str("type", string(ev.Type)).Str("id", ev.ID).
				Msg("event not projected; advancing past it")
		} else if err != nil {
			return fmt.Errorf("apply event %d: %w", ev.Seq, err)
		} else if !one.Empty() {
			if err := b.Apply(one, nil); err != nil {
				return fmt.Errorf("apply event %d: %w", ev.Seq, err)
			}
		}
		one.Reset()
		last = ev.Seq
		n++
	}
	if n == 0 {
		return nil
	}
	var wm [8]byte
	binary.BigEndian.PutUint64(wm[:], last)
	if err := b.Set([]byte(keyApplied), wm[:], nil); err != nil {
		return fmt.Errorf("apply events to %d: %w", last, err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("apply events to %d: commit: %w", last, err)
	}
	v.applied.Store(last)
	v.notifyMu.Lock()
	close(v.changed)
	v.changed = make(chan struct{})
	v.notifyMu.Unlock()
	return nil
}

// tx is one event's projection: it reads the view as the events before it
// left it and writes its changes to w.
type tx struct {
	r pebble.Reader
	w *pebble.Batch
}

func (t *tx) getJSON(key []byte, what string, out any) error { return readJSON(t.r, key, what, out) }

func (t *tx) scan(prefix string, fn func(k, val []byte) error) error {
	return scanReader(t.r, prefix, fn)
}

func (t *tx) image(ns, name string) (api.Image, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return api.Image{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	var img api.Image
	err := t.getJSON(imageKey(ns, name), "image", &img)
	return img, err
}

func (t *tx) operation(id string) (api.Operation, error) {
	var op api.Operation
	err := t.getJSON(opKey(id), "operation", &op)
	return op, err
}

// has reports whether key is in the view.
func (t *tx) has(key []byte) (bool, error) {
	_, c, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return true, c.Close()
}

func (t *tx) container(ns, id string) (api.Container, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return api.Container{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	var c api.Container
	err := t.getJSON(containerKey(ns, id), "container", &c)
	return c, err
}

// errSkip marks an event that cannot be projected (its payload is unreadable
// or incomplete). Whether an event is skipped depends on the event alone, so
// replays skip the same events.
var errSkip = errors.New("event skipped")

// project adds ev's changes to b. Reads go to the committed store: Apply is
// serialized, so it holds every earlier event's changes. Errors not wrapping
// errSkip come from the store and fail the Apply.
func (v *View) project(t *tx, ev *events.Envelope) error {
	decode := func(p any) error {
		if err := ev.Decode(p); err != nil {
			return fmt.Errorf("%w: %w", err, errSkip)
		}
		return nil
	}
	if ev.Version > events.SchemaVersion {
		return fmt.Errorf("schema version %d is newer than %d: %w", ev.Version, events.SchemaVersion, errSkip)
	}
	if ok, err := v.projectContainer(t, ev, decode); ok {
		return err
	}
	at := ev.Time.UTC()
	switch ev.Type {
	case events.TypePullRequested:
		var p events.PullRequested
		if err := decode(&p); err != nil {
			return err
		}
		id := opID(ev)
		if id == "" {
			return fmt.Errorf("pull without an operation id: %w", errSkip)
		}
		return v.startOp(t, api.Operation{
			ID: id, Kind: OpKindPull, Ref: p.Ref, State: api.OpRunning, Actor: ev.Actor, StartedAt: at,
		})

	case events.TypePullCompleted:
		var p events.PullCompleted
		if err := decode(&p); err != nil {
			return err
		}
		return v.endOp(t, opID(ev), OpKindPull, p.Ref, ev, api.OpCompleted, "", "")

	case events.TypePullFailed:
		var p events.PullFailed
		if err := decode(&p); err != nil {
			return err
		}
		return v.endOp(t, opID(ev), OpKindPull, p.Ref, ev, api.OpFailed, p.Code, p.Message)

	case events.TypeImageUpdated:
		var p events.ImageUpdated
		if err := decode(&p); err != nil {
			return err
		}
		if err := checkImage(ev.Namespace, p.Name); err != nil {
			return err
		}
		img := api.Image{
			Name: p.Name, Target: p.Target, Size: p.Size, Created: p.Created, Platform: p.Platform, UpdatedAt: at,
		}
		// The same target keeps its snapshots; another target has none yet.
		switch old, err := t.image(ev.Namespace, p.Name); {
		case err == nil:
			if old.Target.Digest == p.Target.Digest {
				img.Unpacked = old.Unpacked
			}
		case !errors.Is(err, errdefs.ErrNotFound):
			return err
		}
		return putJSON(t.w, imageKey(ev.Namespace, p.Name), img)

	case events.TypeImageUnpacked:
		var p events.ImageUnpacked
		if err := decode(&p); err != nil {
			return err
		}
		if err := checkImage(ev.Namespace, p.Name); err != nil {
			return err
		}
		return v.imageUnpacked(t, ev, p)

	case events.TypeSnapshotRemoved:
		var p events.SnapshotRemoved
		if err := decode(&p); err != nil {
			return err
		}
		return v.snapshotRemoved(t, ev.Node, p.Key)

	case events.TypeImageDeleted:
		var p events.ImageDeleted
		if err := decode(&p); err != nil {
			return err
		}
		if err := checkImage(ev.Namespace, p.Name); err != nil {
			return err
		}
		if err := t.w.Delete(imageKey(ev.Namespace, p.Name), nil); err != nil {
			return fmt.Errorf("delete image: %w", err)
		}
		if ev.Operation == "" {
			return nil
		}
		return v.startOp(t, api.Operation{
			ID: ev.Operation, Kind: OpKindImagesRemove, Ref: p.Name, State: api.OpCompleted,
			Actor: ev.Actor, StartedAt: at, EndedAt: at,
		})

	case events.TypeBlobCommitted:
		var p events.BlobCommitted
		if err := decode(&p); err != nil {
			return err
		}
		d := p.Descriptor.Digest
		if err := d.Validate(); err != nil {
			return fmt.Errorf("blob digest: %w: %w", err, errSkip)
		}
		if ok, err := t.has(blobKey(d)); ok || err != nil {
			return err // first commit wins
		}
		return putJSON(t.w, blobKey(d), Blob{
			Digest: d, Size: p.Descriptor.Size, MediaType: p.Descriptor.MediaType, CommittedAt: at, Node: ev.Node,
		})

	case events.TypeContentDeleteRequested:
		var p events.ContentDeleteRequested
		if err := decode(&p); err != nil {
			return err
		}
		id := opID(ev)
		if id == "" {
			return nil
		}
		return v.startOp(t, api.Operation{
			ID: id, Kind: OpKindContentDelete, Ref: p.Digest.String(), State: api.OpRunning,
			Actor: ev.Actor, StartedAt: at,
		})

	case events.TypeBlobDeleted:
		var p events.BlobDeleted
		if err := decode(&p); err != nil {
			return err
		}
		if err := p.Digest.Validate(); err != nil {
			return fmt.Errorf("blob digest: %w: %w", err, errSkip)
		}
		if err := t.w.Delete(blobKey(p.Digest), nil); err != nil {
			return fmt.Errorf("delete blob: %w", err)
		}
		if ev.Operation == "" {
			return nil
		}
		return v.endOp(t, ev.Operation, OpKindContentDelete, p.Digest.String(), ev, api.OpCompleted, "", "")

	case events.TypeContentDeleteFailed:
		var p events.ContentDeleteFailed
		if err := decode(&p); err != nil {
			return err
		}
		if ev.Operation == "" {
			return nil
		}
		return v.endOp(t, ev.Operation, OpKindContentDelete, p.Digest.String(), ev, api.OpFailed, p.Code, p.Message)
	}
	return nil
}

// opID is the operation an event belongs to: its envelope's, or for pull
// aggregates the aggregate id.
func opID(ev *events.Envelope) string {
	if ev.Operation != "" {
		return ev.Operation
	}
	if ev.Aggregate.Kind == events.KindPull {
		return ev.Aggregate.ID
	}
	return ""
}

// startOp records op unless an operation with its id exists already (the
// first event wins, so a replayed request cannot reset a finished operation).
func (v *View) startOp(t *tx, op api.Operation) error {
	if ok, err := t.has(opKey(op.ID)); ok || err != nil {
		return err
	}
	return putJSON(t.w, opKey(op.ID), op)
}

// endOp moves operation id to a final state. The first final state wins. An
// operation whose start is not in the view (the log was truncated) is
// recorded from what the ending event says.
func (v *View) endOp(t *tx, id, kind, ref string, ev *events.Envelope, state, code, msg string) error {
	if id == "" {
		return fmt.Errorf("%s without an operation id: %w", ev.Type, errSkip)
	}
	at := ev.Time.UTC()
	op, err := t.operation(id)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		op = api.Operation{ID: id, Kind: kind, Ref: ref, Actor: ev.Actor, StartedAt: at}
	case err != nil:
		return err
	case op.State != api.OpRunning:
		return nil
	}
	op.State, op.Code, op.Message, op.EndedAt = state, code, msg, at
	return putJSON(t.w, opKey(id), op)
}

// unpackedAt is the value of an unpk/ key: the nodes where an image's
// target has its top snapshot.
type unpackedAt struct {
	Target digest.Digest `json:"target"`
	Nodes  []string      `json:"nodes"`
}

// imageUnpacked adds the event's node to the image's Unpacked nodes, if the
// image is still there with the target that was unpacked, and remembers the
// top snapshot so that its removal takes the node back.
func (v *View) imageUnpacked(t *tx, ev *events.Envelope, p events.ImageUnpacked) error {
	if ev.Node == "" {
		return fmt.Errorf("image-unpacked without a node: %w", errSkip)
	}
	img, err := t.image(ev.Namespace, p.Name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // removed since, or never recorded: nothing to mark
	}
	if err != nil {
		return err
	}
	if p.Target != "" && p.Target != img.Target.Digest {
		return nil // an older target's snapshots; the image points elsewhere now
	}
	if p.ChainID.Validate() == nil {
		key := unpackedKey(p.ChainID, ev.Namespace, p.Name)
		var at unpackedAt
		if err := t.getJSON(key, "unpacked index", &at); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
		if at.Target != img.Target.Digest {
			at = unpackedAt{Target: img.Target.Digest}
		}
		if nodes, added := addSorted(at.Nodes, ev.Node); added {
			at.Nodes = nodes
			if err := putJSON(t.w, key, at); err != nil {
				return err
			}
		}
	}
	nodes, added := addSorted(img.Unpacked, ev.Node)
	if !added {
		return nil
	}
	img.Unpacked = nodes
	return putJSON(t.w, imageKey(ev.Namespace, p.Name), img)
}

// snapshotRemoved takes node out of the Unpacked nodes of every image whose
// top snapshot on it was key.
func (v *View) snapshotRemoved(t *tx, node, key string) error {
	chainID, err := digest.Parse(key)
	if err != nil || node == "" {
		return nil // not a layer snapshot: no image's top
	}
	prefix := prefixUnpk + chainID.String() + "/"
	type entry struct {
		key      []byte
		ns, name string
		at       unpackedAt
	}
	var found []entry
	// Collect first: reads of images below must not nest inside the scan.
	if err := t.scan(prefix, func(k, val []byte) error {
		ns, name, ok := strings.Cut(string(k[len(prefix):]), "/")
		if !ok {
			return nil
		}
		e := entry{key: slices.Clone(k), ns: ns, name: name}
		if err := json.Unmarshal(val, &e.at); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		found = append(found, e)
		return nil
	}); err != nil {
		return err
	}
	for _, e := range found {
		nodes, removed := removeSorted(e.at.Nodes, node)
		if !removed {
			continue
		}
		if len(nodes) == 0 {
			if err := t.w.Delete(e.key, nil); err != nil {
				return fmt.Errorf("delete %s: %w", e.key, err)
			}
		} else if err := putJSON(t.w, e.key, unpackedAt{Target: e.at.Target, Nodes: nodes}); err != nil {
			return err
		}
		img, err := t.image(e.ns, e.name)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if img.Target.Digest != e.at.Target {
			continue
		}
		if img.Unpacked, removed = removeSorted(img.Unpacked, node); removed {
			if len(img.Unpacked) == 0 {
				img.Unpacked = nil
			}
			if err := putJSON(t.w, imageKey(e.ns, e.name), img); err != nil {
				return err
			}
		}
	}
	return nil
}

// addSorted inserts s into the sorted list, unless it is there.
func addSorted(list []string, s string) ([]string, bool) {
	i, ok := slices.BinarySearch(list, s)
	if ok {
		return list, false
	}
	return slices.Insert(slices.Clone(list), i, s), true
}

// removeSorted removes s from the sorted list, if it is there.
func removeSorted(list []string, s string) ([]string, bool) {
	i, ok := slices.BinarySearch(list, s)
	if !ok {
		return list, false
	}
	return slices.Delete(slices.Clone(list), i, i+1), true
}

func checkImage(ns, name string) error {
	if err := events.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", err, errSkip)
	}
	if name == "" {
		return fmt.Errorf("image without a name: %w", errSkip)
	}
	return nil
}

func imageKey(ns, name string) []byte { return []byte(prefixImg + ns + "/" + name) }
func blobKey(d digest.Digest) []byte  { return []byte(prefixBlob + d.String()) }
func opKey(id string) []byte          { return []byte(prefixOp + id) }

func unpackedKey(chainID digest.Digest, ns, name string) []byte {
	return []byte(prefixUnpk + chainID.String() + "/" + ns + "/" + name)
}

func putJSON(b *pebble.Batch, key []byte, v any) error {
	val, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if err := b.Set(key, val, nil); err != nil {
		return fmt.Errorf("set %s: %w", key, err)
	}
	return nil
}

// getJSON reads key into v; a missing key is errdefs.ErrNotFound.
func (v *View) getJSON(key []byte, what string, out any) error {
	v.dbMu.RLock()
	defer v.dbMu.RUnlock()
	if v.dbClosed {
		return fmt.Errorf("read %s: view closed: %w", what, errdefs.ErrUnavailable)
	}
	return readJSON(v.db, key, what, out)
}

// readJSON reads key from r into out; a missing key is errdefs.ErrNotFound.
func readJSON(r pebble.Reader, key []byte, what string, out any) error {
	val, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	defer c.Close()
	if err := json.Unmarshal(val, out); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	return nil
}

// scan calls fn for every key/value with prefix, in key order. The slices
// are only valid during the call.
func (v *View) scan(prefix string, fn func(k, val []byte) error) error {
	v.dbMu.RLock()
	defer v.dbMu.RUnlock()
	if v.dbClosed {
		return fmt.Errorf("scan %s: view closed: %w", prefix, errdefs.ErrUnavailable)
	}
	return scanReader(v.db, prefix, fn)
}

// scanReader is scan over r.
func scanReader(r pebble.Reader, prefix string, fn func(k, val []byte) error) (err error) {
	var lower []byte // nil, not empty: Pebble's race-build invariants index an empty bound
	if prefix != "" {
		lower = []byte(prefix)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return fmt.Errorf("scan %s: %w", prefix, err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("scan %s: %w", prefix, cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("scan %s: %w", prefix, err)
		}
		if err := fn(it.Key(), val); err != nil {
			return err
		}
	}
	return it.Error()
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// or nil (no bound) if there is none.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Images returns the images in namespace ns, sorted by name.
func (v *View) Images(ns string) ([]api.Image, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	out := []api.Image{}
	err := v.scan(prefixImg+ns+"/", func(k, val []byte) error {
		var img api.Image
		if err := json.Unmarshal(val, &img); err != nil {
			return fmt.Errorf("decode image %s: %w", k, err)
		}
		out = append(out, img)
		return nil
	})
	return out, err
}

// Image returns the image name in namespace ns, or an error wrapping
// errdefs.ErrNotFound.
func (v *View) Image(ns, name string) (api.Image, error) {
	if err := events.ValidateNamespace(ns); err != nil {
		return api.Image{}, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	var img api.Image
	err := v.getJSON(imageKey(ns, name), fmt.Sprintf("image %q in namespace %q", name, ns), &img)
	return img, err
}

// Operation returns operation id, or an error wrapping errdefs.ErrNotFound.
func (v *View) Operation(id string) (api.Operation, error) {
	var op api.Operation
	err := v.getJSON(opKey(id), fmt.Sprintf("operation %q", id), &op)
	return op, err
}

// Blob returns the blob d, or an error wrapping errdefs.ErrNotFound.
func (v *View) Blob(d digest.Digest) (Blob, error) {
	var bl Blob
	err := v.getJSON(blobKey(d), fmt.Sprintf("blob %s", d), &bl)
	return bl, err
}

// Blobs returns every blob in the view, sorted by digest.
func (v *View) Blobs() ([]Blob, error) {
	out := []Blob{}
	err := v.scan(prefixBlob, func(k, val []byte) error {
		var bl Blob
		if err := json.Unmarshal(val, &bl); err != nil {
			return fmt.Errorf("decode blob %s: %w", k, err)
		}
		out = append(out, bl)
		return nil
	})
	return out, err
}

// Dump writes every key and value in the store, in key order, one pair per
// line as two Go-quoted strings, from one consistent snapshot of the store.
// Two views that applied the same log dump the same bytes.
func (v *View) Dump(w io.Writer) error {
	_, err := v.dumpSnapshot(w)
	return err
}

// Digest returns the sequence the view has applied and the SHA-256 (hex)
// of what Dump writes, both read from one consistent snapshot of the store:
// two views that applied the same log up to seq have the same digest.
func (v *View) Digest() (seq uint64, sum string, err error) {
	h := sha256.New()
	seq, err = v.dumpSnapshot(h)
	if err != nil {
		return 0, "", err
	}
	return seq, hex.EncodeToString(h.Sum(nil)), nil
}

// dumpSnapshot dumps a snapshot of the store to w and returns the
// watermark it holds.
func (v *View) dumpSnapshot(w io.Writer) (uint64, error) {
	v.dbMu.RLock()
	defer v.dbMu.RUnlock()
	if v.dbClosed {
		return 0, fmt.Errorf("dump view: view closed: %w", errdefs.ErrUnavailable)
	}
	snap := v.db.NewSnapshot()
	defer snap.Close()
	seq, err := readWatermark(snap)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(w)
	var line []byte
	err = scanReader(snap, "", func(k, val []byte) error {
		line = strconv.AppendQuote(line[:0], string(k))
		line = append(line, ' ')
		line = strconv.AppendQuote(line, string(val))
		line = append(line, '\n')
		_, err := bw.Write(line)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("dump view: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("dump view: %w", err)
	}
	return seq, nil
}

// pebbleLogger sends Pebble's messages to zerolog.
type pebbleLogger struct{ l zerolog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug().Str("component", "pebble").Msgf(format, args...)
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error().Str("component", "pebble").Msgf(format, args...)
}

// Fatalf logs and then lets Pebble's default logger end the process, as
// Pebble requires: it does not expect Fatalf to return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error().Str("component", "pebble").Bool("fatal", true).Msgf(format, args...)
	pebble.DefaultLogger.Fatalf(format, args...)
}
