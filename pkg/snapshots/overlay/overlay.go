//go:build linux

// Package overlay is a snapshots.Snapshotter on overlayfs, modelled on
// containerd's plugins/snapshots/overlay.
//
// Layout under the root directory:
//
//	metadata/            Pebble: the snapshots' metadata
//	snapshots/<id>/fs    a committed snapshot: one layer's files in overlay
//	                     form; an active one: its upper dir
//	snapshots/<id>/work  an active snapshot's overlay work dir
//	tmp/                 layers being applied, snapshots being removed
//
// A committed snapshot holds only its own layer, so ApplyLayer fills an
// empty directory and layers can be applied in any order
// (ParallelApply is true): a layer applied before its parent records the
// parent's name, and the chain is checked when the snapshot is used.
//
// Mounts: an active snapshot is an overlay with its fs as upperdir over the
// parent chain's fs dirs (a read-write bind mount of fs with no parent); a
// view, or a committed snapshot, with one layer is a read-only bind mount of
// that layer, with more an overlay with lowerdirs only (read-only). The
// kernel stacks at most snapshots.MaxOverlayLayers lower dirs: Mounts of a
// deeper chain fail with errdefs.ErrResourceExhausted. Mount options longer
// than mount(2)'s one-page limit (about 80 layers, depending on the length
// of root) are handled by snapshots.MountAll, which then uses the new mount
// API (Linux 6.8+); a person running Mount.String by hand may hit the limit.
//
// Crash safety, metadata and reconciliation on open are described in
// package engine's doc (pkg/snapshots/internal/engine): a crash at any point
// leaves no half-applied committed snapshot, and metadata and directories
// agree once New returns.
package overlay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/internal/engine"
)

// Snapshotter is the overlayfs snapshotter. It is safe for concurrent use;
// one process at a time may use a root.
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

// New opens (creating if needed) the overlay snapshotter at root and
// reconciles it after a crash. root must not contain ',' or ':' (they
// separate overlay options); that is errdefs.ErrInvalidArgument. If
// overlayfs does not work under root (see snapshots.OverlaySupported) New
// returns an error wrapping errdefs.ErrUnavailable; a caller may fall back
// to the native snapshotter.
func New(root string, opts ...Option) (*Snapshotter, error) {
	o := options{log: zerolog.Nop()}
	for _, fn := range opts {
		if err := fn(&o); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("overlay snapshotter %s: %w: %w", root, errdefs.ErrInvalidArgument, err)
	}
	if strings.ContainsAny(abs, ",:") {
		return nil, fmt.Errorf("overlay snapshotter root %q contains ',' or ':': %w", abs, errdefs.ErrInvalidArgument)
	}
	// The probe works in tmp/, which Open empties, so a crash during it
	// leaves nothing behind for good.
	if err := snapshots.OverlaySupported(filepath.Join(abs, "tmp")); err != nil {
		return nil, err
	}
	e, err := engine.Open(engine.Config{Root: abs, Driver: driver{indexOff: indexOff()}, Logger: o.log, NoSync: o.noSync})
	if err != nil {
		return nil, err
	}
	return &Snapshotter{core: e}, nil
}

// indexOff returns ["index=off"] when the kernel has overlay's inodes index
// (which is best off with lower dirs shared by many mounts), as containerd
// does.
func indexOff() []string {
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		return []string{"index=off"}
	}
	return nil
}

// driver is the overlay engine.Driver.
type driver struct {
	indexOff []string
}

func (driver) Parallel() bool { return true }

func (driver) InitApply(_ context.Context, fsDir string, parents []string) ([]string, error) {
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return nil, err
	}
	return parents, nil
}

func (driver) InitSnapshot(_ context.Context, dir string, kind snapshots.Kind, _ []string) error {
	if err := os.Mkdir(filepath.Join(dir, "fs"), 0o755); err != nil {
		return err
	}
	if kind == snapshots.KindActive {
		return os.Mkdir(filepath.Join(dir, "work"), 0o700)
	}
	return nil
}

func (d driver) Mounts(dir string, kind snapshots.Kind, lowers []string) ([]snapshots.Mount, error) {
	if len(lowers) > snapshots.MaxOverlayLayers {
		return nil, fmt.Errorf("%d layers, overlayfs stacks at most %d: %w", len(lowers), snapshots.MaxOverlayLayers, errdefs.ErrResourceExhausted)
	}
	fsDir := filepath.Join(dir, "fs")
	bind := func(src, mode string) []snapshots.Mount {
		return []snapshots.Mount{{Type: "bind", Source: src, Options: []string{"rbind", mode}}}
	}
	opts := append([]string(nil), d.indexOff...)
	if kind == snapshots.KindActive {
		if len(lowers) == 0 {
			return bind(fsDir, "rw"), nil
		}
		opts = append(opts, "workdir="+filepath.Join(dir, "work"), "upperdir="+fsDir, "lowerdir="+strings.Join(lowers, ":"))
		return []snapshots.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
	}
	switch len(lowers) {
	case 0:
		return bind(fsDir, "ro"), nil
	case 1:
		return bind(lowers[0], "ro"), nil
	}
	opts = append(opts, "lowerdir="+strings.Join(lowers, ":"))
	return []snapshots.Mount{{Type: "overlay", Source: "overlay", Options: opts}}, nil
}

func (driver) Recover(dir string, kind snapshots.Kind) error {
	work := filepath.Join(dir, "work")
	switch kind {
	case snapshots.KindCommitted:
		return os.RemoveAll(work)
	case snapshots.KindActive:
		return os.MkdirAll(work, 0o700)
	}
	return nil
}
