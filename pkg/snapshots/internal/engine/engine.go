//go:build linux

// Package engine is the snapshot lifecycle the snapshotters share: metadata
// in Pebble, the directory layout, crash-safe creation and removal,
// reconciliation on open and single-flight ApplyLayer. A Driver supplies
// what differs between implementations: how a snapshot's directory is
// populated and how it is mounted.
//
// Layout under the root directory:
//
//	metadata/            Pebble: the snapshots' metadata
//	snapshots/<id>/fs    a snapshot's files (<id> is a decimal number)
//	snapshots/<id>/work  overlay's workdir, for active snapshots
//	tmp/                 directories being built or removed; emptied on open
//
// Pebble keys:
//
//	v                    the metadata schema version, "1"
//	s/<key>              one snapshot's record, JSON
//	c/<parent>\x00<key>  the parent → child index (empty value)
//
// Crash safety. A snapshot's directory is built under tmp/, renamed into
// snapshots/<id> with RENAME_NOREPLACE, the snapshots/ directory is
// fsynced, and only then is its record written, with pebble.Sync. A
// committed snapshot's files are flushed (syncfs) before the rename unless
// NoSync is set. Removal deletes the record first (pebble.Sync) and then the
// directory. So after a crash at any point there may be directories without
// records (and leftovers in tmp/), never a record whose directory is half
// built; Open removes those leftovers, and also drops (and logs) a record
// whose directory has vanished, so metadata and directories always agree
// once Open returns. One process uses a root at a time: Pebble's lock on
// metadata/ makes a second Open fail.
package engine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/internal/fsutil"
)

// FormatMajorVersion is the Pebble on-disk format the metadata is pinned to.
// Raising it is a deliberate, one-way migration.
const FormatMajorVersion = pebble.FormatTableFormatV6

const (
	schemaVersion = "1"
	keyVersion    = "v"
	prefixSnap    = "s/"
	prefixChild   = "c/"

	// maxKeyLen bounds a snapshot key or name.
	maxKeyLen = 4096
	// maxLabelSize bounds one label's key plus value, as containerd does.
	maxLabelSize = 4096
	// maxChain bounds how deep a parent chain is followed, so corrupt
	// metadata cannot loop.
	maxChain = 10000
)

// Driver is what differs between snapshotters. Its methods are called
// without the engine's lock held, except Mounts, which must be quick.
type Driver interface {
	// Parallel reports ApplyLayer's contract; see
	// snapshots.LayerApplier.ParallelApply.
	Parallel() bool
	// InitApply creates fsDir (which does not exist) for ApplyLayer and
	// returns the lowers to pass to fill. parents are the fs dirs of the
	// committed parent chain, top-most first; nil when there is no parent
	// or, with Parallel, the chain is not complete yet.
	InitApply(ctx context.Context, fsDir string, parents []string) (lowers []string, err error)
	// InitSnapshot populates dir (empty) for a new active snapshot or view
	// over parents (as for InitApply, but always the complete chain). It
	// must create dir/fs.
	InitSnapshot(ctx context.Context, dir string, kind snapshots.Kind, parents []string) error
	// Mounts returns the mounts of the snapshot in dir. kind is KindActive
	// (read-write over lowers) or KindView (read-only over lowers; for a
	// committed snapshot the engine passes its own fs dir as the first
	// lower).
	Mounts(dir string, kind snapshots.Kind, lowers []string) ([]snapshots.Mount, error)
	// Recover brings dir in line with kind: it is called for every snapshot
	// on Open and for a snapshot just committed.
	Recover(dir string, kind snapshots.Kind) error
}

// Config configures Open.
type Config struct {
	// Root is the directory the snapshotter owns; created if needed.
	Root string
	// Driver is the implementation.
	Driver Driver
	// Logger receives reconciliation reports and Pebble's messages.
	Logger zerolog.Logger
	// NoSync skips syncfs(2) before a committed snapshot is renamed into
	// place: a process crash still leaves a consistent state, a power loss
	// may leave committed snapshots with missing data. For tests.
	NoSync bool
}

// TestHook, when set (by tests only), is called at the named points of the
// crash-safety protocol: "apply-filled" (fill done, nothing in place),
// "renamed" (directory in place, no record), "recorded" (record written),
// "remove-unrecorded" (record deleted, directory still in place). A crash
// test kills its process there.
var TestHook func(point string)

func hook(point string) {
	if TestHook != nil {
		TestHook(point)
	}
}

// Engine implements snapshots.Snapshotter on top of a Driver.
type Engine struct {
	root      string
	snapsDir  string
	tmpDir    string
	db        *pebble.DB
	drv       Driver
	log       zerolog.Logger
	noSync    bool
	errClosed error

	mu       sync.Mutex // guards everything below and every use of db
	closed   bool
	nextID   uint64
	inflight map[string]*flight // keys being created
	pins     map[string]int     // keys that snapshots are being created over, or being committed
	ops      sync.WaitGroup     // flights under way; Close waits for them
	bg       sync.WaitGroup     // deletions of removed snapshots' trash; Close waits for them
}

// flight is one creation of a key under way.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
}

// record is a snapshot's metadata as stored.
type record struct {
	ID      uint64            `json:"id"`
	Kind    snapshots.Kind    `json:"kind"`
	Parent  string            `json:"parent,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
	// Size and Inodes are the usage measured at commit (committed only).
	Size   int64 `json:"size,omitempty"`
	Inodes int64 `json:"inodes,omitempty"`
}

func (r *record) info(key string) snapshots.Info {
	return snapshots.Info{
		Key: key, Parent: r.Parent, Kind: r.Kind, Labels: cloneLabels(r.Labels),
		Created: r.Created, Updated: r.Updated,
	}
}

// Open opens (creating if needed) the snapshotter at cfg.Root and
// reconciles its directories with its metadata.
func Open(cfg Config) (*Engine, error) {
	if cfg.Driver == nil || cfg.Root == "" {
		return nil, fmt.Errorf("open snapshotter: no root or driver: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open snapshotter %s: %w: %w", cfg.Root, errdefs.ErrInvalidArgument, err)
	}
	e := &Engine{
		root:      root,
		snapsDir:  filepath.Join(root, "snapshots"),
		tmpDir:    filepath.Join(root, "tmp"),
		drv:       cfg.Driver,
		log:       cfg.Logger,
		noSync:    cfg.NoSync,
		errClosed: fmt.Errorf("snapshotter %s is closed: %w", root, errdefs.ErrUnavailable),
		inflight:  map[string]*flight{},
		pins:      map[string]int{},
	}
	for _, d := range []string{root, e.snapsDir, e.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open snapshotter: %w", err)
		}
	}
	e.db, err = pebble.Open(filepath.Join(root, "metadata"), &pebble.Options{
		FormatMajorVersion: FormatMajorVersion,
		Logger:             pebbleLogger{cfg.Logger},
	})
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata in %s: %w: %w", root, errdefs.ErrUnavailable, err)
	}
	if err := e.reconcile(); err != nil {
		_ = e.db.Close()
		return nil, fmt.Errorf("open snapshotter %s: %w", root, err)
	}
	return e, nil
}

// reconcile makes the directories and the metadata agree after a crash; see
// the package doc.
func (e *Engine) reconcile() error {
	if err := e.checkVersion(); err != nil {
		return err
	}
	// Leftovers of creations and removals cut short.
	tmps, err := os.ReadDir(e.tmpDir)
	if err != nil {
		return err
	}
	for _, t := range tmps {
		p := filepath.Join(e.tmpDir, t.Name())
		e.log.Info().Str("path", p).Msg("snapshots: removing leftover of an unfinished operation")
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove leftover %s: %w", p, err)
		}
	}
	recs, err := e.loadAll()
	if err != nil {
		return err
	}
	byID := make(map[uint64]string, len(recs))
	var maxID uint64
	for key, r := range recs {
		if other, dup := byID[r.ID]; dup {
			return fmt.Errorf("snapshots %q and %q share directory %d: %w", key, other, r.ID, errdefs.ErrDataLoss)
		}
		byID[r.ID] = key
		maxID = max(maxID, r.ID)
	}
	// Directories without a record: renamed into place, not recorded.
	dirs, err := os.ReadDir(e.snapsDir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		id, err := strconv.ParseUint(d.Name(), 10, 64)
		if _, ok := byID[id]; ok && err == nil {
			continue
		}
		p := filepath.Join(e.snapsDir, d.Name())
		e.log.Warn().Str("path", p).Msg("snapshots: removing a snapshot directory with no metadata")
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove unrecorded %s: %w", p, err)
		}
	}
	// Records without a directory: lost outside our control.
	b := e.db.NewBatch()
	defer b.Close()
	for _, key := range slices.Sorted(maps.Keys(recs)) {
		r := recs[key]
		dir := e.dir(r.ID)
		if _, err := os.Lstat(filepath.Join(dir, "fs")); errors.Is(err, fs.ErrNotExist) {
			e.log.Error().Str("key", key).Str("kind", r.Kind.String()).Str("path", dir).
				Msg("snapshots: dropping the metadata of a snapshot whose directory is missing")
			_ = b.Delete([]byte(prefixSnap+key), nil)
			if r.Parent != "" {
				_ = b.Delete(childKey(r.Parent, key), nil)
			}
			delete(recs, key)
			continue
		} else if err != nil {
			return err
		}
		if err := e.drv.Recover(dir, r.Kind); err != nil {
			return fmt.Errorf("recover snapshot %q in %s: %w", key, dir, err)
		}
	}
	// Child index entries whose child is gone (belt and braces: they are
	// always written in one batch with the child's record).
	if err := e.scan(prefixChild, func(k, _ []byte) error {
		parent, child, ok := strings.Cut(string(k[len(prefixChild):]), "\x00")
		if r, exists := recs[child]; !ok || !exists || r.Parent != parent {
			_ = b.Delete(slices.Clone(k), nil)
		}
		return nil
	}); err != nil {
		return err
	}
	if !b.Empty() {
		if err := b.Commit(pebble.Sync); err != nil {
			return fmt.Errorf("reconcile snapshot metadata: %w", err)
		}
	}
	e.nextID = maxID + 1
	return nil
}

func (e *Engine) checkVersion() error {
	v, closer, err := e.db.Get([]byte(keyVersion))
	if errors.Is(err, pebble.ErrNotFound) {
		if err := e.db.Set([]byte(keyVersion), []byte(schemaVersion), pebble.Sync); err != nil {
			return fmt.Errorf("write metadata version: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read metadata version: %w", err)
	}
	defer closer.Close()
	if string(v) != schemaVersion {
		return fmt.Errorf("snapshot metadata version %q, this program knows %q: %w", v, schemaVersion, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (e *Engine) loadAll() (map[string]*record, error) {
	recs := map[string]*record{}
	err := e.scan(prefixSnap, func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode snapshot record %q: %w: %w", k, errdefs.ErrDataLoss, err)
		}
		recs[string(k[len(prefixSnap):])] = &r
		return nil
	})
	return recs, err
}

// scan calls fn for every key with prefix, in order. k and v are valid
// only during the call.
func (e *Engine) scan(prefix string, fn func(k, v []byte) error) (err error) {
	it, err := e.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte(prefix),
		UpperBound: prefixEnd(prefix),
	})
	if err != nil {
		return fmt.Errorf("scan snapshot metadata: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("scan snapshot metadata: %w", cerr)
		}
	}()
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("scan snapshot metadata: %w", err)
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	return it.Error()
}

// prefixEnd returns the smallest key greater than every key with prefix
// (the prefixes used here never end in 0xff).
func prefixEnd(prefix string) []byte {
	end := []byte(prefix)
	end[len(end)-1]++
	return end
}

func childKey(parent, child string) []byte {
	return []byte(prefixChild + parent + "\x00" + child)
}

func (e *Engine) dir(id uint64) string {
	return filepath.Join(e.snapsDir, strconv.FormatUint(id, 10))
}

// getLocked returns key's record, or nil if there is none.
func (e *Engine) getLocked(key string) (*record, error) {
	v, closer, err := e.db.Get([]byte(prefixSnap + key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot %q: %w", key, err)
	}
	defer closer.Close()
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode snapshot %q: %w: %w", key, errdefs.ErrDataLoss, err)
	}
	return &r, nil
}

// mustGetLocked is getLocked with a missing key as errdefs.ErrNotFound.
func (e *Engine) mustGetLocked(key string) (*record, error) {
	r, err := e.getLocked(key)
	if err == nil && r == nil {
		err = fmt.Errorf("snapshot %q: %w", key, errdefs.ErrNotFound)
	}
	return r, err
}

// chainLocked returns the fs dirs of parent and its ancestors, top-most
// first. Each must exist (else errdefs.ErrNotFound, naming the missing one)
// and be committed (else errdefs.ErrFailedPrecondition).
func (e *Engine) chainLocked(parent string) ([]string, error) {
	var dirs []string
	seen := map[string]bool{}
	for p := parent; p != ""; {
		if seen[p] || len(dirs) >= maxChain {
			return nil, fmt.Errorf("parent chain of %q loops or is deeper than %d: %w", parent, maxChain, errdefs.ErrFailedPrecondition)
		}
		seen[p] = true
		r, err := e.getLocked(p)
		if err != nil {
			return nil, err
		}
		if r == nil {
			if p == parent {
				return nil, fmt.Errorf("parent %q: %w", p, errdefs.ErrNotFound)
			}
			return nil, fmt.Errorf("ancestor %q of parent %q: %w", p, parent, errdefs.ErrNotFound)
		}
		if r.Kind != snapshots.KindCommitted {
			return nil, fmt.Errorf("parent %q is %s, not committed: %w", p, r.Kind, errdefs.ErrFailedPrecondition)
		}
		dirs = append(dirs, filepath.Join(e.dir(r.ID), "fs"))
		p = r.Parent
	}
	return dirs, nil
}

func (e *Engine) hasChildrenLocked(key string) (bool, error) {
	found := false
	err := e.scan(prefixChild+key+"\x00", func(_, _ []byte) error {
		found = true
		return errStop
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return found, err
}

var errStop = errors.New("stop")

// begin claims key for creation. If another creation of key is under way
// it returns that flight instead; if key exists, errdefs.ErrAlreadyExists.
func (e *Engine) begin(key string) (mine, other *flight, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, e.errClosed
	}
	if f := e.inflight[key]; f != nil {
		return nil, f, nil
	}
	r, err := e.getLocked(key)
	if err != nil {
		return nil, nil, err
	}
	if r != nil {
		return nil, nil, fmt.Errorf("snapshot %q: %w", key, errdefs.ErrAlreadyExists)
	}
	f := &flight{done: make(chan struct{})}
	e.inflight[key] = f
	e.ops.Add(1)
	return f, nil, nil
}

// reserve is begin that waits out another creation of key and tries again.
func (e *Engine) reserve(ctx context.Context, key string) (*flight, error) {
	for {
		mine, other, err := e.begin(key)
		if err != nil || mine != nil {
			return mine, err
		}
		select {
		case <-other.done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// end finishes a flight begun by begin.
func (e *Engine) end(key string, f *flight, err error) {
	e.locked(func() { delete(e.inflight, key) })
	f.err = err
	close(f.done)
	e.ops.Done()
}

// pinParent resolves parent's chain (see chainLocked) and pins parent so
// it cannot be removed while a snapshot is made over it; the caller unpins
// it if pinned. With missingOK, a chain that is not complete yet is no
// error: it returns no dirs and pins nothing.
func (e *Engine) pinParent(parent string, missingOK bool) (dirs []string, pinned bool, err error) {
	if parent == "" {
		return nil, false, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dirs, err = e.chainLocked(parent)
	if err != nil {
		if missingOK && errors.Is(err, errdefs.ErrNotFound) {
			return nil, false, nil
		}
		return nil, false, err
	}
	e.pins[parent]++
	return dirs, true, nil
}

func (e *Engine) unpin(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pins[key]--; e.pins[key] <= 0 {
		delete(e.pins, key)
	}
}

// install renames the built directory tmp into place and records it as key
// (whose flight the caller holds). On error nothing of it remains.
func (e *Engine) install(tmp, key string, r *record) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r.ID = e.nextID
	e.nextID++
	val, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode snapshot %q: %w: %w", key, errdefs.ErrInternal, err)
	}
	dst := e.dir(r.ID)
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("move snapshot %q into place: %w", key, err)
	}
	undo := func(err error) error {
		if rerr := os.RemoveAll(dst); rerr != nil {
			e.log.Error().Err(rerr).Str("path", dst).Msg("snapshots: cannot remove a failed snapshot; it goes on the next open")
		}
		return err
	}
	if err := fsutil.SyncDir(e.snapsDir); err != nil {
		return undo(fmt.Errorf("record snapshot %q: %w", key, err))
	}
	hook("renamed")
	b := e.db.NewBatch()
	defer b.Close()
	_ = b.Set([]byte(prefixSnap+key), val, nil)
	if r.Parent != "" {
		_ = b.Set(childKey(r.Parent, key), nil, nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return undo(fmt.Errorf("record snapshot %q: %w", key, err))
	}
	hook("recorded")
	return nil
}

// removeTemp removes a temporary directory, logging a failure (Open
// removes what is left).
func (e *Engine) removeTemp(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		e.log.Warn().Err(err).Str("path", dir).Msg("snapshots: cannot remove a temporary directory; it goes on the next open")
	}
}

// ParallelApply implements snapshots.LayerApplier.
func (e *Engine) ParallelApply() bool { return e.drv.Parallel() }

// ApplyLayer implements snapshots.LayerApplier.
func (e *Engine) ApplyLayer(ctx context.Context, name, parent string, labels map[string]string, fill snapshots.FillFunc) (snapshots.Info, error) {
	if err := validate(name, parent, labels); err != nil {
		return snapshots.Info{}, fmt.Errorf("apply layer: %w", err)
	}
	if fill == nil || name == parent {
		return snapshots.Info{}, fmt.Errorf("apply layer %q: nil fill or parent equal to name: %w", name, errdefs.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return snapshots.Info{}, fmt.Errorf("apply layer %q: %w", name, err)
	}
	var mine *flight
	for mine == nil {
		var other *flight
		var err error
		mine, other, err = e.begin(name)
		if err != nil {
			return snapshots.Info{}, fmt.Errorf("apply layer: %w", err)
		}
		if other == nil {
			break
		}
		select {
		case <-other.done:
		case <-ctx.Done():
			return snapshots.Info{}, fmt.Errorf("apply layer %q: waiting for a concurrent apply: %w", name, context.Cause(ctx))
		}
		switch {
		case other.err == nil:
			return snapshots.Info{}, fmt.Errorf("apply layer %q: applied concurrently: %w", name, errdefs.ErrAlreadyExists)
		case errors.Is(other.err, context.Canceled) || errors.Is(other.err, context.DeadlineExceeded):
			// The other caller gave up; that is no answer for this one.
			continue
		default:
			return snapshots.Info{}, fmt.Errorf("apply layer %q: the concurrent apply failed: %w", name, other.err)
		}
	}
	info, err := e.applyLayer(ctx, name, parent, labels, fill)
	if err != nil {
		err = fmt.Errorf("apply layer %q: %w", name, err)
	}
	e.end(name, mine, err)
	return info, err
}

func (e *Engine) applyLayer(ctx context.Context, name, parent string, labels map[string]string, fill snapshots.FillFunc) (snapshots.Info, error) {
	// Applied before its parent (Parallel only), fill gets no lowers.
	parents, pinned, err := e.pinParent(parent, e.drv.Parallel())
	if err != nil {
		return snapshots.Info{}, err
	}
	if pinned {
		defer e.unpin(parent)
	}

	tmp, err := os.MkdirTemp(e.tmpDir, "apply-")
	if err != nil {
		return snapshots.Info{}, err
	}
	defer func() {
		if tmp != "" {
			e.removeTemp(tmp)
		}
	}()
	fsDir := filepath.Join(tmp, "fs")
	lowers, err := e.drv.InitApply(ctx, fsDir, parents)
	if err != nil {
		return snapshots.Info{}, err
	}
	if err := e.callFill(ctx, fill, fsDir, lowers); err != nil {
		return snapshots.Info{}, err
	}
	// Measuring the tree (CPU: a stat per entry) and syncing it (waiting
	// on the disk) are independent: do them at once.
	var (
		size, inodes int64
		duErr        error
		measured     = make(chan struct{})
	)
	go func() {
		defer close(measured)
		size, inodes, duErr = fsutil.DiskUsage(ctx, fsDir)
	}()
	var syncErr error
	if !e.noSync {
		syncErr = fsutil.SyncFS(tmp)
	}
	<-measured
	if err := cmp.Or(duErr, syncErr); err != nil {
		return snapshots.Info{}, err
	}
	hook("apply-filled")
	now := time.Now().UTC()
	r := &record{
		Kind: snapshots.KindCommitted, Parent: parent, Labels: cloneLabels(labels),
		Created: now, Updated: now, Size: size, Inodes: inodes,
	}
	if err := e.install(tmp, name, r); err != nil {
		return snapshots.Info{}, err
	}
	tmp = ""
	return r.info(name), nil
}

// callFill calls fill, turning a panic into an error.
func (e *Engine) callFill(ctx context.Context, fill snapshots.FillFunc, dir string, lowers []string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			e.log.Error().Str("panic", fmt.Sprint(p)).Bytes("stack", debug.Stack()).Msg("snapshots: layer fill panicked")
			err = fmt.Errorf("fill panicked: %v: %w", p, errdefs.ErrInternal)
		}
	}()
	return fill(ctx, dir, lowers)
}

// Prepare implements snapshots.Snapshotter.
func (e *Engine) Prepare(ctx context.Context, key, parent string, labels map[string]string) ([]snapshots.Mount, error) {
	m, err := e.create(ctx, snapshots.KindActive, key, parent, labels)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return m, nil
}

// View implements snapshots.Snapshotter.
func (e *Engine) View(ctx context.Context, key, parent string, labels map[string]string) ([]snapshots.Mount, error) {
	m, err := e.create(ctx, snapshots.KindView, key, parent, labels)
	if err != nil {
		return nil, fmt.Errorf("view: %w", err)
	}
	return m, nil
}

func (e *Engine) create(ctx context.Context, kind snapshots.Kind, key, parent string, labels map[string]string) (_ []snapshots.Mount, err error) {
	if err := validate(key, parent, labels); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := e.reserve(ctx, key)
	if err != nil {
		return nil, err
	}
	defer func() { e.end(key, f, err) }()

	parents, pinned, err := e.pinParent(parent, false)
	if err != nil {
		return nil, err
	}
	if pinned {
		defer e.unpin(parent)
	}
	tmp, err := os.MkdirTemp(e.tmpDir, "new-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if tmp != "" {
			e.removeTemp(tmp)
		}
	}()
	if err := e.drv.InitSnapshot(ctx, tmp, kind, parents); err != nil {
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	now := time.Now().UTC()
	r := &record{Kind: kind, Parent: parent, Labels: cloneLabels(labels), Created: now, Updated: now}
	if err := e.install(tmp, key, r); err != nil {
		return nil, err
	}
	tmp = ""
	return e.drv.Mounts(e.dir(r.ID), kind, parents)
}

// Commit implements snapshots.Snapshotter.
func (e *Engine) Commit(ctx context.Context, name, key string, labels map[string]string) (err error) {
	if err := validate(name, "", labels); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := validate(key, "", nil); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	f, err := e.reserve(ctx, name)
	if err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	defer func() { e.end(name, f, err) }()

	r, err := e.pinActive(key)
	if err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	defer e.unpin(key)

	dir := e.dir(r.ID)
	size, inodes, err := fsutil.DiskUsage(ctx, filepath.Join(dir, "fs"))
	if err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	if !e.noSync {
		if err := fsutil.SyncFS(dir); err != nil {
			return fmt.Errorf("commit %q as %q: %w", key, name, err)
		}
	}
	if err := e.commitRecord(name, key, r.ID, labels, size, inodes); err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	if err := e.drv.Recover(dir, snapshots.KindCommitted); err != nil {
		e.log.Warn().Err(err).Str("path", dir).Msg("snapshots: tidying a committed snapshot failed; retried on the next open")
	}
	return nil
}

// pinActive returns the record of the active snapshot key and pins it so it
// cannot be removed while it is being committed.
func (e *Engine) pinActive(key string) (*record, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, err := e.mustGetLocked(key)
	if err != nil {
		return nil, err
	}
	if r.Kind != snapshots.KindActive {
		return nil, fmt.Errorf("snapshot %q is %s, only active snapshots can be committed: %w", key, r.Kind, errdefs.ErrFailedPrecondition)
	}
	e.pins[key]++
	return r, nil
}

func (e *Engine) commitRecord(name, key string, id uint64, labels map[string]string, size, inodes int64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, err := e.mustGetLocked(key)
	if err != nil {
		return err
	}
	if r.ID != id || r.Kind != snapshots.KindActive {
		return fmt.Errorf("snapshot %q changed during commit: %w", key, errdefs.ErrNotFound)
	}
	c := *r
	c.Kind = snapshots.KindCommitted
	c.Labels = cloneLabels(labels)
	c.Updated = time.Now().UTC()
	c.Size, c.Inodes = size, inodes
	val, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInternal, err)
	}
	b := e.db.NewBatch()
	defer b.Close()
	_ = b.Delete([]byte(prefixSnap+key), nil)
	_ = b.Set([]byte(prefixSnap+name), val, nil)
	if c.Parent != "" {
		_ = b.Delete(childKey(c.Parent, key), nil)
		_ = b.Set(childKey(c.Parent, name), nil, nil)
	}
	return b.Commit(pebble.Sync)
}

// Remove implements snapshots.Snapshotter.
func (e *Engine) Remove(ctx context.Context, key string) error {
	if err := validate(key, "", nil); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	trash, err := e.removeRecord(key)
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	if trash != "" {
		// Out of the caller's way: the record is gone and the directory is
		// out of snapshots/, so the removal is done as far as anyone can
		// see; an interrupted deletion of the trash is finished by Open.
		e.bg.Go(func() { e.removeTemp(trash) })
	}
	return nil
}

// removeRecord deletes key's record and moves its directory out of
// snapshots/, returning where to (or "" if it is already gone).
func (e *Engine) removeRecord(key string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return "", e.errClosed
	}
	r, err := e.mustGetLocked(key)
	if err != nil {
		return "", err
	}
	if e.pins[key] > 0 {
		return "", fmt.Errorf("a snapshot is being made from it: %w", errdefs.ErrFailedPrecondition)
	}
	children, err := e.hasChildrenLocked(key)
	if err != nil {
		return "", err
	}
	if children {
		return "", fmt.Errorf("it is the parent of other snapshots: %w", errdefs.ErrFailedPrecondition)
	}
	b := e.db.NewBatch()
	defer b.Close()
	_ = b.Delete([]byte(prefixSnap+key), nil)
	if r.Parent != "" {
		_ = b.Delete(childKey(r.Parent, key), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return "", err
	}
	hook("remove-unrecorded")
	dir := e.dir(r.ID)
	trash := filepath.Join(e.tmpDir, "rm-"+strconv.FormatUint(r.ID, 10))
	if err := os.Rename(dir, trash); err != nil {
		// Removed from the metadata all the same; the directory goes now
		// or on the next open.
		e.log.Warn().Err(err).Str("path", dir).Msg("snapshots: cannot move a removed snapshot aside; removing in place")
		return dir, nil
	}
	return trash, nil
}

// Stat implements snapshots.Snapshotter.
func (e *Engine) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return snapshots.Info{}, e.errClosed
	}
	r, err := e.mustGetLocked(key)
	if err != nil {
		return snapshots.Info{}, fmt.Errorf("stat: %w", err)
	}
	return r.info(key), nil
}

// Usage implements snapshots.Snapshotter.
func (e *Engine) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var r *record
	err := e.whileOpen(func() (err error) {
		r, err = e.mustGetLocked(key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage: %w", err)
	}
	if r.Kind == snapshots.KindCommitted {
		return snapshots.Usage{Size: r.Size, Inodes: r.Inodes}, nil
	}
	size, inodes, err := fsutil.DiskUsage(ctx, filepath.Join(e.dir(r.ID), "fs"))
	if errors.Is(err, fs.ErrNotExist) {
		return snapshots.Usage{}, fmt.Errorf("usage of %q: removed meanwhile: %w", key, errdefs.ErrNotFound)
	}
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("usage of %q: %w", key, err)
	}
	return snapshots.Usage{Size: size, Inodes: inodes}, nil
}

// Mounts implements snapshots.Snapshotter.
func (e *Engine) Mounts(ctx context.Context, key string) ([]snapshots.Mount, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, e.errClosed
	}
	r, err := e.mustGetLocked(key)
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	var lowers []string
	if r.Parent != "" {
		if lowers, err = e.chainLocked(r.Parent); err != nil {
			return nil, fmt.Errorf("mounts of %q: %w", key, err)
		}
	}
	kind := r.Kind
	if kind == snapshots.KindCommitted {
		kind = snapshots.KindView
		lowers = append([]string{filepath.Join(e.dir(r.ID), "fs")}, lowers...)
	}
	m, err := e.drv.Mounts(e.dir(r.ID), kind, lowers)
	if err != nil {
		return nil, fmt.Errorf("mounts of %q: %w", key, err)
	}
	return m, nil
}

// Walk implements snapshots.Snapshotter.
func (e *Engine) Walk(ctx context.Context, fn func(snapshots.Info) error) error {
	var infos []snapshots.Info
	err := e.whileOpen(func() error {
		return e.scan(prefixSnap, func(k, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode snapshot %q: %w: %w", k, errdefs.ErrDataLoss, err)
			}
			infos = append(infos, r.info(string(k[len(prefixSnap):])))
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("walk: %w", err)
	}
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Close implements snapshots.Snapshotter.
func (e *Engine) Close() error {
	first := false
	e.locked(func() { first, e.closed = !e.closed, true })
	if !first {
		return nil
	}
	e.ops.Wait() // flights use db without checking closed
	e.bg.Wait()
	var err error
	e.locked(func() { err = e.db.Close() })
	if err != nil {
		return fmt.Errorf("close snapshot metadata: %w", err)
	}
	return nil
}

// locked runs fn with e.mu held.
func (e *Engine) locked(fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn()
}

// whileOpen runs fn with e.mu held, or fails with errdefs.ErrUnavailable
// once the engine is closed.
func (e *Engine) whileOpen(fn func() error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return e.errClosed
	}
	return fn()
}

// validate checks a key, a parent ("" for none) and labels.
func validate(key, parent string, labels map[string]string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", errdefs.ErrInvalidArgument)
	}
	for _, k := range []string{key, parent} {
		if len(k) > maxKeyLen || strings.IndexByte(k, 0) >= 0 {
			return fmt.Errorf("key %.64q: longer than %d bytes or has a NUL byte: %w", k, maxKeyLen, errdefs.ErrInvalidArgument)
		}
	}
	for k, v := range labels {
		if k == "" || len(k)+len(v) > maxLabelSize {
			return fmt.Errorf("label %.64q: empty, or key and value longer than %d bytes: %w", k, maxLabelSize, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func cloneLabels(l map[string]string) map[string]string {
	if len(l) == 0 {
		return nil
	}
	return maps.Clone(l)
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
