//go:build linux

// Package native is a snapshots.Snapshotter that works on any filesystem:
// every snapshot is a full copy of its parent's tree, mounted with bind
// mounts. It is the fallback where overlayfs does not work; it uses more disk
// and applies layers one after another.
//
// Layout under the root directory:
//
//	metadata/            Pebble: the snapshots' metadata
//	snapshots/<id>/fs    the snapshot's whole root filesystem (empty for a view)
//	tmp/                 layers being applied, snapshots being removed
//
// ApplyLayer copies the committed parent's tree (modes, owners, xattrs,
// times, hard links, device nodes and symlinks preserved) into a fresh
// directory and lets fill apply the layer to it directly, so the parent
// must be committed first (ParallelApply is false). Prepare copies the
// parent likewise and mounts it with a read-write bind mount; View and a
// committed snapshot's Mounts are a read-only bind mount of the committed
// tree itself, with no copy.
//
// Crash safety, metadata and reconciliation on open are described in
// package engine's doc (pkg/snapshots/internal/engine): a crash at any point
// leaves no half-applied committed snapshot, and metadata and directories
// agree once New returns.
package native

import (
	"context"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/internal/engine"
	"github.com/stevedore/stevedore/pkg/snapshots/internal/fsutil"
)

// Snapshotter is the native snapshotter. It is safe for concurrent use; one
// process at a time may use a root.
//
// Its methods implement snapshots.Snapshotter; their contracts, errors
// included, are documented there.
type Snapshotter struct {
	*core
}

// core keeps the engine embedded without exporting it.
type core = engine.Engine

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

type options struct {
	log    zerolog.Logger
	noSync bool
}

// Option configures New.
type Option func(*options) error

// WithLogger sets the logger for reconciliation reports (what a crash left
// behind and New removed) and Pebble's messages. The default discards them.
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithNoSync skips flushing a committed snapshot's files (syncfs(2)) before
// it is moved into place. A process crash still leaves a consistent state; a
// power loss may leave committed snapshots with missing data. For tests and
// throwaway roots only.
func WithNoSync() Option {
	return func(o *options) error { o.noSync = true; return nil }
}

// New opens (creating if needed) the native snapshotter at root and
// reconciles it after a crash.
func New(root string, opts ...Option) (*Snapshotter, error) {
	o := options{log: zerolog.Nop()}
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	e, err := engine.Open(engine.Config{Root: root, Driver: driver{}, Logger: o.log, NoSync: o.noSync})
	if err != nil {
		return nil, err
	}
	return &Snapshotter{core: e}, nil
}

// driver is the native engine.Driver.
type driver struct{}

func (driver) Parallel() bool { return false }

func (driver) InitApply(ctx context.Context, fsDir string, parents []string) ([]string, error) {
	return nil, populate(ctx, fsDir, parents)
}

func (driver) InitSnapshot(ctx context.Context, dir string, kind snapshots.Kind, parents []string) error {
	if kind == snapshots.KindView {
		parents = nil // mounted from the parent itself
	}
	return populate(ctx, filepath.Join(dir, "fs"), parents)
}

// populate makes fsDir a copy of the top-most parent, or empty.
func populate(ctx context.Context, fsDir string, parents []string) error {
	if len(parents) == 0 {
		return os.Mkdir(fsDir, 0o755)
	}
	return fsutil.Copy(ctx, fsDir, parents[0])
}

func (driver) Mounts(dir string, kind snapshots.Kind, lowers []string) ([]snapshots.Mount, error) {
	src, mode := filepath.Join(dir, "fs"), "rw"
	if kind != snapshots.KindActive {
		mode = "ro"
		if len(lowers) > 0 {
			src = lowers[0]
		}
	}
	return []snapshots.Mount{{Type: "bind", Source: src, Options: []string{"rbind", mode}}}, nil
}

func (driver) Recover(string, snapshots.Kind) error { return nil }
