// Package snapshots defines Stevedore's node-local snapshotter: the layer
// directories an unpacker builds from an image's layers and the root
// filesystems containers run on. It is modelled on containerd's
// core/snapshots and uses its vocabulary:
//
//   - A snapshot is named by a string. A committed snapshot's name is a
//     "name"; an active snapshot's name is a "key". Both live in one
//     namespace: a key and a name can never be equal.
//   - A committed snapshot is immutable. It is made either by ApplyLayer
//     (the unpacker's path: one image layer on top of its parent, named by
//     the layer's chainID) or by Commit of an active snapshot.
//   - An active snapshot (Prepare) is a writable filesystem over a committed
//     parent (or empty, with parent ""). Its Mounts are read-write.
//   - A view (View) is a read-only filesystem over a committed parent. It
//     can be removed but never committed.
//   - The parent of a snapshot is always a committed snapshot. A snapshot
//     that is the parent of another cannot be removed until the child is.
//
// A typical container rootfs lifecycle:
//
//	mounts, _ := sn.Prepare(ctx, "ctr-1", chainID, nil) // writable, over the image
//	snapshots.MountAll(mounts, rootfs)                  // ... run the container ...
//	snapshots.UnmountAll(rootfs)
//	sn.Remove(ctx, "ctr-1")                             // or Commit it to a new name
//
// and the unpacker's path, one call per layer:
//
//	sn.ApplyLayer(ctx, chainID[i], chainID[i-1], labels, fill)
//
// Implementations live in the subpackages overlay (overlayfs; layers can be
// applied in any order) and native (full copies and bind mounts; works on any
// filesystem, layers applied in order). Both keep their metadata in Pebble
// and are crash safe: after a crash at any point the metadata and the
// directories agree (design invariant 3). The testsuite subpackage is the
// conformance suite every implementation runs.
package snapshots

import (
	"context"
	"crypto/sha256"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind is the kind of a snapshot.
type Kind string

// The snapshot kinds. The zero Kind is not a valid kind.
const (
	// KindCommitted is an immutable snapshot, made by ApplyLayer or Commit.
	// It may be the parent of other snapshots.
	KindCommitted Kind = "committed"
	// KindActive is a writable snapshot made by Prepare. It can be
	// committed or removed.
	KindActive Kind = "active"
	// KindView is a read-only snapshot made by View. It can only be removed.
	KindView Kind = "view"
)

// String returns the kind's name.
func (k Kind) String() string { return string(k) }

// ContainerLabel labels the active snapshot that is a container's root
// filesystem with the container's "<namespace>/<id>". The executor sets it
// when it prepares the rootfs; the node's snapshot service refuses to remove
// a snapshot so labelled except for the removal of that container.
const ContainerLabel = "stevedore.io/container"

// Info describes one snapshot.
type Info struct {
	// Key is the snapshot's key (active, view) or name (committed).
	Key string
	// Parent is the name of the committed parent, "" for none. With an
	// implementation that applies layers in parallel, a committed snapshot
	// made by ApplyLayer may name a parent that does not exist yet.
	Parent string
	// Kind is the snapshot's kind.
	Kind Kind
	// Labels are the snapshot's labels; nil when it has none.
	Labels map[string]string
	// Created is when the snapshot (or, for a committed one made by Commit,
	// the active snapshot it came from) was created.
	Created time.Time
	// Updated is when the snapshot's metadata last changed.
	Updated time.Time
}

// Usage is the disk space a snapshot uses on its own, without its parents
// (for implementations that copy, such as native, that includes the copy).
type Usage struct {
	// Size is the bytes allocated on disk (st_blocks × 512; hard links
	// counted once).
	Size int64
	// Inodes is the number of inodes, the snapshot's root directory included.
	Inodes int64
}

// Mount is one mount(2) call that builds (part of) a snapshot's filesystem
// at a target directory. Mounts are applied in order with MountAll.
type Mount struct {
	// Type is the filesystem type: "overlay" or "bind".
	Type string
	// Source is the mount source: a directory for bind mounts, the
	// filesystem name for others.
	Source string
	// Options are mount(8) style options: flags such as "ro" and "rbind"
	// and filesystem data such as "lowerdir=…".
	Options []string
}

// String returns the mount(8) command line a person could run to make m,
// with the target left as the placeholder "<target>", e.g.
//
//	mount -t bind -o rbind,ro /var/lib/stevedore/snapshots/4/fs <target>
//
// Words with characters special to a shell are single-quoted.
func (m Mount) String() string {
	var b strings.Builder
	b.WriteString("mount -t ")
	b.WriteString(shellQuote(m.Type))
	if len(m.Options) > 0 {
		b.WriteString(" -o ")
		b.WriteString(shellQuote(strings.Join(m.Options, ",")))
	}
	b.WriteString(" ")
	b.WriteString(shellQuote(m.Source))
	b.WriteString(" <target>")
	return b.String()
}

// shellQuote quotes s for a POSIX shell if it needs quoting.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("-_./:=,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// FillFunc writes one layer into dir, a fresh directory private to the
// call. What dir holds on entry, and how fill must express deletions,
// depends on the snapshotter (see LayerApplier.ParallelApply). lowers are
// the layer directories of the committed parent chain, top-most first,
// when the snapshotter provides them, else nil. fill must honour ctx, must
// not keep dir or lowers after it returns, and must not modify lowers.
type FillFunc func(ctx context.Context, dir string, lowers []string) error

// LayerApplier is the part of a snapshotter an unpacker needs.
type LayerApplier interface {
	// ApplyLayer creates the committed snapshot name (by convention a
	// layer's chainID, "sha256:…") with parent parent ("" for a base layer)
	// by calling fill on a fresh temporary directory. Only when fill returns
	// nil is the directory moved into place and the snapshot recorded, so a
	// crash or a failure never leaves a half-applied committed snapshot; on
	// any failure everything ApplyLayer made is removed and the error is
	// returned (a panic in fill is recovered and returned as an error
	// wrapping errdefs.ErrInternal).
	//
	// If name already exists, ApplyLayer returns an error wrapping
	// errdefs.ErrAlreadyExists without calling fill; callers treat that as
	// success (idempotency). Concurrent calls for one name are
	// single-flighted: one calls fill, the others wait for it and then
	// return an error wrapping errdefs.ErrAlreadyExists if it succeeded, or
	// the error it failed with (wrapped, so errors.Is still matches) if it
	// failed, except that when it failed with its own context's
	// cancellation or deadline a waiter takes over and does the work
	// itself. A waiter whose ctx ends first returns ctx's error.
	//
	// The parent is resolved as ParallelApply says. A parent that exists
	// but is not committed is errdefs.ErrFailedPrecondition. Invalid
	// arguments (empty name, a NUL byte, oversized labels, nil fill) are
	// errdefs.ErrInvalidArgument.
	ApplyLayer(ctx context.Context, name, parent string, labels map[string]string, fill FillFunc) (Info, error)

	// ParallelApply reports the fill contract of ApplyLayer.
	//
	// true (overlay): fill gets an EMPTY directory and must write the
	// layer's changes in overlay form: a deleted path as a 0/0 character
	// device (a whiteout), a directory whose lower contents are hidden with
	// the xattr trusted.overlay.opaque=y. The parent need not exist yet, so
	// layers can be applied in any order: lowers is the committed parent
	// chain's layer dirs (top-most first) if the whole chain is committed,
	// else nil. The parent name is recorded anyway and checked when the
	// snapshot is used (Prepare, View, Mounts return errdefs.ErrNotFound
	// while the chain is incomplete).
	//
	// false (native): the parent must be committed (else
	// errdefs.ErrNotFound, which an unpacker retries once the parent is
	// applied); fill gets a full copy of the parent's root filesystem and
	// applies the layer to it directly (deleting whited-out paths); lowers
	// is nil.
	ParallelApply() bool
}

// Snapshotter manages the snapshots of one node. Implementations are safe
// for concurrent use. Errors callers branch on wrap an errdefs class, as
// each method says; for all of them errdefs.ErrNotFound is a missing key,
// errdefs.ErrInvalidArgument a malformed argument (an empty key, a NUL byte,
// a label over 4 KiB) and errdefs.ErrUnavailable a closed snapshotter.
// Filesystem failures are returned wrapped, with their errno.
type Snapshotter interface {
	// Stat returns the snapshot key (a key or a name). errdefs.ErrNotFound
	// if there is none.
	Stat(ctx context.Context, key string) (Info, error)

	// Usage returns the disk space the snapshot uses on its own. For a
	// committed snapshot it was measured when it was committed; for an
	// active one it is measured now, which may take a while for a big one.
	Usage(ctx context.Context, key string) (Usage, error)

	// Mounts returns the mounts that build the snapshot's filesystem: read
	// write for an active snapshot, read-only for a view or a committed
	// snapshot. errdefs.ErrNotFound if key, or any snapshot in its parent
	// chain, does not exist.
	Mounts(ctx context.Context, key string) ([]Mount, error)

	// Prepare creates the active snapshot key over the committed snapshot
	// parent ("" for an empty one) and returns its mounts. Changes made
	// through the mounts stay in the snapshot until it is committed or
	// removed. errdefs.ErrAlreadyExists if key exists (as any kind);
	// errdefs.ErrNotFound if parent or any of its ancestors does not exist;
	// errdefs.ErrFailedPrecondition if parent is not committed.
	Prepare(ctx context.Context, key, parent string, labels map[string]string) ([]Mount, error)

	// View is like Prepare but creates a read-only view; its mounts are
	// read-only and it can never be committed.
	View(ctx context.Context, key, parent string, labels map[string]string) ([]Mount, error)

	// Commit turns the active snapshot key into the committed snapshot
	// name, with labels as its labels; key no longer exists afterwards.
	// The snapshot should be unmounted first. errdefs.ErrNotFound if key
	// does not exist; errdefs.ErrFailedPrecondition if key is not active;
	// errdefs.ErrAlreadyExists if name exists.
	Commit(ctx context.Context, name, key string, labels map[string]string) error

	// Remove removes the snapshot key (of any kind) and its files. It
	// should be unmounted first. errdefs.ErrNotFound if key does not
	// exist; errdefs.ErrFailedPrecondition while another snapshot names it
	// as parent (or one is being made over it).
	Remove(ctx context.Context, key string) error

	// Walk calls fn for every snapshot, in key order, and stops at the
	// first error fn returns, which Walk returns. fn may call the
	// snapshotter.
	Walk(ctx context.Context, fn func(Info) error) error

	// Close waits for operations under way, then releases the
	// snapshotter's resources. Later calls fail with errdefs.ErrUnavailable;
	// calling Close again returns nil.
	Close() error

	LayerApplier
}

// ChainID returns the chainIDs of a stack of layers given their diffIDs,
// bottom-most first, as the OCI image spec defines them:
//
//	ChainID(L0)   = DiffID(L0)
//	ChainID(L0|…|Ln) = sha256(ChainID(L0|…|Ln-1) + " " + DiffID(Ln))
//
// The result has one entry per diffID; nil for none.
func ChainID(diffIDs []digest.Digest) []digest.Digest {
	if len(diffIDs) == 0 {
		return nil
	}
	out := make([]digest.Digest, len(diffIDs))
	out[0] = diffIDs[0]
	for i := 1; i < len(diffIDs); i++ {
		out[i] = digest.NewDigestFromBytes(digest.SHA256, sha256Sum(string(out[i-1])+" "+string(diffIDs[i])))
	}
	return out
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
