//go:build linux

// Package testsuite is the conformance suite for snapshots.Snapshotter
// implementations, modelled on containerd's core/snapshots/testsuite. Every
// implementation runs it from its own tests:
//
//	func TestSuite(t *testing.T) {
//		testsuite.Run(t, "overlay", func(t *testing.T, root string) snapshots.Snapshotter { ... })
//	}
//
// The suite mounts snapshots for real, so it needs root: without it the
// suite skips, except in CI (CI=true), where it fails saying so.
//
// Layers are written in the form ParallelApply promises: overlay form
// (whiteouts as 0/0 character devices, opaque directories by xattr) when it
// is true, applied directly to the parent's copy (deleting) when false.
//
// The crash cases reopen a root and assume the layout the snapshotters in
// this module share: root/tmp/ holds unfinished work and
// root/snapshots/<id>/fs a snapshot's files.
package testsuite

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

// NewFunc opens (creating if needed) the snapshotter at root, or fails t.
// Reopening a root after Close must find the snapshots made before. The
// suite closes what it opens; Close must tolerate being called twice.
type NewFunc func(t *testing.T, root string) snapshots.Snapshotter

// Run runs the conformance suite as subtests of t named name. Each case
// gets a fresh root and runs in parallel with the others.
func Run(t *testing.T, name string, newSnapshotter NewFunc) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"ApplyLayerBaseAndChild", testApplyLayerBaseAndChild},
		{"ApplyLayerIdempotent", testApplyLayerIdempotent},
		{"ApplyLayerFailingFill", testApplyLayerFailingFill},
		{"ApplyLayerConcurrent", testApplyLayerConcurrent},
		{"ApplyLayerParentOrder", testApplyLayerParentOrder},
		{"InvalidArguments", testInvalidArguments},
		{"PrepareWriteCommit", testPrepareWriteCommit},
		{"Whiteout", testWhiteout},
		{"OpaqueDir", testOpaqueDir},
		{"ViewReadOnly", testViewReadOnly},
		{"CommitErrors", testCommitErrors},
		{"RemoveWithChildren", testRemoveWithChildren},
		{"Walk", testWalk},
		{"StatUsage", testStatUsage},
		{"Labels", testLabels},
		{"ConcurrentLifecycle", testConcurrentLifecycle},
		{"ReopenReconcile", testReopenReconcile},
		{"Close", testClose},
	}
	t.Run(name, func(t *testing.T) {
		requireRoot(t)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				h := &harness{root: t.TempDir(), open: newSnapshotter}
				h.sn = h.reopen(t)
				tc.fn(t, h)
			})
		}
	})
}

// requireRoot skips t without root, or fails it in CI.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := fmt.Sprintf("the snapshots testsuite mounts filesystems and needs root (running as uid %d)", os.Geteuid())
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

type harness struct {
	root string
	open NewFunc
	sn   snapshots.Snapshotter
}

// reopen opens the snapshotter at h.root, closing it at the end of t.
func (h *harness) reopen(t *testing.T) snapshots.Snapshotter {
	t.Helper()
	sn := h.open(t, h.root)
	t.Cleanup(func() {
		if err := sn.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return sn
}

// overlayForm reports whether fills write overlay form.
func (h *harness) overlayForm() bool { return h.sn.ParallelApply() }

// op is one change a layer makes.
type op struct {
	kind string // "file", "dir", "whiteout", "opaque"
	path string
	data string
}

func file(path, data string) op { return op{"file", path, data} }
func dir(path string) op        { return op{"dir", path, ""} }
func whiteout(path string) op   { return op{"whiteout", path, ""} }
func opaque(path string) op     { return op{"opaque", path, ""} }

// fill returns a FillFunc that makes ops in the snapshotter's form.
func (h *harness) fill(ops ...op) snapshots.FillFunc {
	overlay := h.overlayForm()
	return func(ctx context.Context, root string, lowers []string) error {
		for _, o := range ops {
			p := filepath.Join(root, o.path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			var err error
			switch o.kind {
			case "file":
				err = os.WriteFile(p, []byte(o.data), 0o644)
			case "dir":
				err = os.MkdirAll(p, 0o755)
			case "whiteout":
				if overlay {
					err = unix.Mknod(p, unix.S_IFCHR, 0)
				} else {
					err = os.RemoveAll(p)
				}
			case "opaque":
				if overlay {
					if err = os.MkdirAll(p, 0o755); err == nil {
						err = unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
					}
				} else {
					err = emptyDir(p)
				}
			}
			if err != nil {
				return fmt.Errorf("layer op %s %s: %w", o.kind, o.path, err)
			}
		}
		return nil
	}
}

func emptyDir(p string) error {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(p, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// apply applies a layer made of ops, failing t on error.
func (h *harness) apply(t *testing.T, name, parent string, ops ...op) snapshots.Info {
	t.Helper()
	info, err := h.sn.ApplyLayer(t.Context(), name, parent, nil, h.fill(ops...))
	if err != nil {
		t.Fatalf("ApplyLayer(%q, %q): %v", name, parent, err)
	}
	return info
}

// mount mounts mounts on a fresh directory, unmounted at the end of t (or
// earlier with the returned func).
func mount(t *testing.T, mounts []snapshots.Mount) (string, func()) {
	t.Helper()
	target := t.TempDir()
	if err := snapshots.MountAll(mounts, target); err != nil {
		t.Fatalf("MountAll(%v): %v", mounts, err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			if err := snapshots.UnmountAll(target); err != nil {
				t.Errorf("UnmountAll: %v", err)
			}
		})
	}
	t.Cleanup(unmount) // runs before TempDir's removal
	return target, unmount
}

// mountKey mounts the snapshot key.
func (h *harness) mountKey(t *testing.T, key string) (string, func()) {
	t.Helper()
	m, err := h.sn.Mounts(t.Context(), key)
	if err != nil {
		t.Fatalf("Mounts(%q): %v", key, err)
	}
	return mount(t, m)
}

// Markers for checkTree.
const (
	absent = "\x00absent"
	isDir  = "\x00dir"
)

// checkTree checks files under root: content, isDir or absent.
func checkTree(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w := want[p]
		full := filepath.Join(root, p)
		fi, err := os.Lstat(full)
		switch {
		case w == absent:
			if err == nil {
				t.Errorf("%s exists (%v), want it absent", p, fi.Mode())
			} else if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %v", p, err)
			}
		case err != nil:
			t.Errorf("%s: %v", p, err)
		case w == isDir:
			if !fi.IsDir() {
				t.Errorf("%s is %v, want a directory", p, fi.Mode())
			}
		default:
			b, err := os.ReadFile(full)
			if err != nil || string(b) != w {
				t.Errorf("%s = %q, %v; want %q", p, b, err, w)
			}
		}
	}
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// leftovers lists what is in root/tmp and root/snapshots.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, d := range []string{"tmp", "snapshots"} {
		entries, err := os.ReadDir(filepath.Join(root, d))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, d+"/"+e.Name())
		}
	}
	return out
}

// settled is leftovers once there are want of them, or after a few
// seconds: Remove deletes a removed snapshot's directory in the background.
func settled(t *testing.T, root string, want int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := leftovers(t, root)
		if len(l) == want || time.Now().After(deadline) {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func wantErr(t *testing.T, what string, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s: err = %v, want %v", what, err, class)
	}
}

func testApplyLayerBaseAndChild(t *testing.T, h *harness) {
	ctx := t.Context()
	base, err := h.sn.ApplyLayer(ctx, "base", "", map[string]string{"l": "1"}, h.fill(file("a", "A1"), file("dir/b", "B")))
	if err != nil {
		t.Fatal(err)
	}
	if base.Key != "base" || base.Parent != "" || base.Kind != snapshots.KindCommitted || base.Labels["l"] != "1" {
		t.Errorf("base info = %+v", base)
	}
	var gotLowers []string
	var sawParentFile bool
	child, err := h.sn.ApplyLayer(ctx, "child", "base", nil, func(ctx context.Context, dir string, lowers []string) error {
		gotLowers = lowers
		if h.overlayForm() {
			if n := names(t, dir); len(n) != 0 {
				t.Errorf("overlay fill dir holds %v, want it empty", n)
			}
			if len(lowers) == 1 {
				b, _ := os.ReadFile(filepath.Join(lowers[0], "a"))
				sawParentFile = string(b) == "A1"
			}
		} else {
			b, _ := os.ReadFile(filepath.Join(dir, "a"))
			sawParentFile = string(b) == "A1"
		}
		return h.fill(file("a", "A2"), file("c", "C"))(ctx, dir, lowers)
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.overlayForm() && len(gotLowers) != 1 {
		t.Errorf("overlay fill lowers = %v, want the parent's layer dir", gotLowers)
	}
	if !h.overlayForm() && gotLowers != nil {
		t.Errorf("native fill lowers = %v, want nil", gotLowers)
	}
	if !sawParentFile {
		t.Error("fill did not see the parent's file (in lowers for overlay, in dir otherwise)")
	}
	if child.Parent != "base" || child.Kind != snapshots.KindCommitted {
		t.Errorf("child info = %+v", child)
	}
	st, err := h.sn.Stat(ctx, "child")
	if err != nil || st.Parent != "base" || st.Kind != snapshots.KindCommitted {
		t.Errorf("Stat(child) = %+v, %v", st, err)
	}
	target, _ := h.mountKey(t, "child")
	checkTree(t, target, map[string]string{"a": "A2", "dir/b": "B", "c": "C"})
	target, _ = h.mountKey(t, "base")
	checkTree(t, target, map[string]string{"a": "A1", "dir/b": "B", "c": absent})
}

func testApplyLayerIdempotent(t *testing.T, h *harness) {
	h.apply(t, "base", "", file("a", "A"))
	_, err := h.sn.ApplyLayer(t.Context(), "base", "", nil, func(context.Context, string, []string) error {
		t.Error("fill called for an existing snapshot")
		return nil
	})
	wantErr(t, "re-apply", err, errdefs.ErrAlreadyExists)
	target, _ := h.mountKey(t, "base")
	checkTree(t, target, map[string]string{"a": "A"})
}

func testApplyLayerFailingFill(t *testing.T, h *harness) {
	ctx := t.Context()
	boom := errors.New("boom")
	_, err := h.sn.ApplyLayer(ctx, "l", "", nil, func(ctx context.Context, dir string, lowers []string) error {
		if err := os.WriteFile(filepath.Join(dir, "half"), []byte("x"), 0o644); err != nil {
			return err
		}
		return boom
	})
	wantErr(t, "failing fill", err, boom)
	_, err = h.sn.ApplyLayer(ctx, "l", "", nil, func(ctx context.Context, dir string, lowers []string) error {
		_ = os.WriteFile(filepath.Join(dir, "half"), []byte("x"), 0o644)
		panic("fill bug")
	})
	wantErr(t, "panicking fill", err, errdefs.ErrInternal)
	_, err = h.sn.Stat(ctx, "l")
	wantErr(t, "Stat after failed applies", err, errdefs.ErrNotFound)
	if n := walkKeys(t, h.sn); len(n) != 0 {
		t.Errorf("Walk after failed applies = %v, want nothing", n)
	}
	if l := leftovers(t, h.root); len(l) != 0 {
		t.Errorf("failed applies left %v", l)
	}
	// The name is free for a good apply.
	h.apply(t, "l", "", file("ok", "ok"))
	target, _ := h.mountKey(t, "l")
	checkTree(t, target, map[string]string{"ok": "ok", "half": absent})
}

func testApplyLayerConcurrent(t *testing.T, h *harness) {
	ctx := t.Context()
	const n = 8
	var calls atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, n)
	fill := h.fill(file("f", "F"))
	for i := range n {
		wg.Go(func() {
			_, errs[i] = h.sn.ApplyLayer(ctx, "same", "", nil, func(ctx context.Context, dir string, lowers []string) error {
				calls.Add(1)
				time.Sleep(50 * time.Millisecond)
				return fill(ctx, dir, lowers)
			})
		})
	}
	wg.Wait()
	var ok, exists int
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, errdefs.ErrAlreadyExists):
			exists++
		default:
			t.Errorf("concurrent apply: %v", err)
		}
	}
	if ok != 1 || exists != n-1 || calls.Load() != 1 {
		t.Errorf("concurrent applies: %d ok, %d already exist, fill called %d times; want 1, %d, 1", ok, exists, calls.Load(), n-1)
	}

	// A worker whose own context ends hands the work to a waiter.
	leaderCtx, cancel := context.WithCancel(ctx)
	started := make(chan struct{})
	var leaderErr error
	calls.Store(0)
	wg.Go(func() {
		_, leaderErr = h.sn.ApplyLayer(leaderCtx, "handed-over", "", nil, func(ctx context.Context, dir string, lowers []string) error {
			calls.Add(1)
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
	})
	<-started
	var waiterErr error
	wg.Go(func() {
		_, waiterErr = h.sn.ApplyLayer(ctx, "handed-over", "", nil, func(ctx context.Context, dir string, lowers []string) error {
			calls.Add(1)
			return fill(ctx, dir, lowers)
		})
	})
	time.Sleep(20 * time.Millisecond) // let the waiter wait
	cancel()
	wg.Wait()
	if !errors.Is(leaderErr, context.Canceled) || waiterErr != nil || calls.Load() != 2 {
		t.Errorf("cancelled worker: its error %v, the waiter's %v, fill called %d times; want Canceled, nil, 2", leaderErr, waiterErr, calls.Load())
	}

	// When the worker fails, the waiters get its error.
	boom := errors.New("boom")
	for i := range n {
		wg.Go(func() {
			_, errs[i] = h.sn.ApplyLayer(ctx, "failing", "", nil, func(context.Context, string, []string) error {
				time.Sleep(50 * time.Millisecond)
				return boom
			})
		})
	}
	wg.Wait()
	for _, err := range errs {
		wantErr(t, "concurrent failing apply", err, boom)
	}
}

func testApplyLayerParentOrder(t *testing.T, h *harness) {
	ctx := t.Context()
	if !h.sn.ParallelApply() {
		called := false
		_, err := h.sn.ApplyLayer(ctx, "child", "missing", nil, func(context.Context, string, []string) error {
			called = true
			return nil
		})
		wantErr(t, "apply over a missing parent", err, errdefs.ErrNotFound)
		if called {
			t.Error("fill called although the parent is missing")
		}
		return
	}
	// Children first: L3, then L2, then L1.
	var lowers3, lowers2 []string
	capture := func(dst *[]string, ops ...op) snapshots.FillFunc {
		return func(ctx context.Context, dir string, lowers []string) error {
			*dst = lowers
			return h.fill(ops...)(ctx, dir, lowers)
		}
	}
	if _, err := h.sn.ApplyLayer(ctx, "L3", "L2", nil, capture(&lowers3, file("three", "3"), whiteout("one-gone"), file("shared", "from 3"))); err != nil {
		t.Fatal(err)
	}
	if st, err := h.sn.Stat(ctx, "L3"); err != nil || st.Parent != "L2" {
		t.Errorf("Stat(L3) = %+v, %v; want parent L2", st, err)
	}
	_, err := h.sn.Mounts(ctx, "L3")
	wantErr(t, "Mounts over an incomplete chain", err, errdefs.ErrNotFound)
	_, err = h.sn.Prepare(ctx, "ctr", "L3", nil)
	wantErr(t, "Prepare over an incomplete chain", err, errdefs.ErrNotFound)
	_, err = h.sn.View(ctx, "v", "L3", nil)
	wantErr(t, "View over an incomplete chain", err, errdefs.ErrNotFound)

	if _, err := h.sn.ApplyLayer(ctx, "L2", "L1", nil, capture(&lowers2, file("two", "2"), file("shared", "from 2"), file("one-kept", "overridden"))); err != nil {
		t.Fatal(err)
	}
	h.apply(t, "L1", "", file("one-gone", "1"), file("one-kept", "1"), file("shared", "from 1"), file("one", "1"))
	if lowers3 != nil || lowers2 != nil {
		t.Errorf("fills before their parents got lowers %v, %v; want nil", lowers3, lowers2)
	}
	// Now the chain is complete: a fourth layer gets all lowers.
	var lowers4 []string
	if _, err := h.sn.ApplyLayer(ctx, "L4", "L3", nil, capture(&lowers4, file("four", "4"))); err != nil {
		t.Fatal(err)
	}
	if len(lowers4) != 3 {
		t.Fatalf("L4's fill got lowers %v, want 3 (L3, L2, L1)", lowers4)
	}
	for i, marker := range []string{"three", "two", "one"} {
		if _, err := os.Stat(filepath.Join(lowers4[i], marker)); err != nil {
			t.Errorf("lowers[%d] = %s lacks %s (want top-most first): %v", i, lowers4[i], marker, err)
		}
	}
	target, _ := h.mountKey(t, "L4")
	checkTree(t, target, map[string]string{
		"one": "1", "two": "2", "three": "3", "four": "4",
		"one-gone": absent, "one-kept": "overridden", "shared": "from 3",
	})
	err = h.sn.Remove(ctx, "L1")
	wantErr(t, "Remove(L1) under L2", err, errdefs.ErrFailedPrecondition)
}

func testInvalidArguments(t *testing.T, h *harness) {
	ctx := t.Context()
	fill := h.fill(file("f", "x"))
	_, err := h.sn.ApplyLayer(ctx, "", "", nil, fill)
	wantErr(t, "ApplyLayer empty name", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.ApplyLayer(ctx, "x", "x", nil, fill)
	wantErr(t, "ApplyLayer own parent", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.ApplyLayer(ctx, "x", "", nil, nil)
	wantErr(t, "ApplyLayer nil fill", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.ApplyLayer(ctx, "a\x00b", "", nil, fill)
	wantErr(t, "ApplyLayer NUL in name", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.ApplyLayer(ctx, "x", "", map[string]string{"": "v"}, fill)
	wantErr(t, "ApplyLayer empty label key", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.Prepare(ctx, "x", "", map[string]string{"k": strings.Repeat("v", 5000)})
	wantErr(t, "Prepare oversized label", err, errdefs.ErrInvalidArgument)
	_, err = h.sn.Stat(ctx, "nothing")
	wantErr(t, "Stat missing", err, errdefs.ErrNotFound)
	_, err = h.sn.Mounts(ctx, "nothing")
	wantErr(t, "Mounts missing", err, errdefs.ErrNotFound)
	_, err = h.sn.Usage(ctx, "nothing")
	wantErr(t, "Usage missing", err, errdefs.ErrNotFound)
	if l := leftovers(t, h.root); len(l) != 0 {
		t.Errorf("invalid calls left %v", l)
	}
}

func testPrepareWriteCommit(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"), file("d/x", "X"))
	m, err := h.sn.Prepare(ctx, "active", "base", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h.sn.Stat(ctx, "active")
	if err != nil || st.Kind != snapshots.KindActive || st.Parent != "base" {
		t.Errorf("Stat(active) = %+v, %v", st, err)
	}
	target, unmount := mount(t, m)
	checkTree(t, target, map[string]string{"a": "A", "d/x": "X"})
	for p, data := range map[string]string{"a": "A2", "new": "N", "d/y": "Y"} {
		if err := os.WriteFile(filepath.Join(target, p), []byte(data), 0o644); err != nil {
			t.Fatalf("write %s through the mount: %v", p, err)
		}
	}
	unmount()
	// Mounts of the active snapshot give the same, writable view again.
	target2, unmount2 := h.mountKey(t, "active")
	checkTree(t, target2, map[string]string{"a": "A2", "new": "N", "d/y": "Y"})
	unmount2()

	if err := h.sn.Commit(ctx, "committed", "active", nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.sn.Stat(ctx, "active")
	wantErr(t, "Stat(key) after Commit", err, errdefs.ErrNotFound)
	st, err = h.sn.Stat(ctx, "committed")
	if err != nil || st.Kind != snapshots.KindCommitted || st.Parent != "base" {
		t.Errorf("Stat(committed) = %+v, %v", st, err)
	}
	vm, err := h.sn.View(ctx, "view", "committed", nil)
	if err != nil {
		t.Fatal(err)
	}
	target, _ = mount(t, vm)
	checkTree(t, target, map[string]string{"a": "A2", "new": "N", "d/x": "X", "d/y": "Y"})
	// The base is unchanged.
	target, _ = h.mountKey(t, "base")
	checkTree(t, target, map[string]string{"a": "A", "new": absent, "d/y": absent})
	// An empty active snapshot works too.
	m, err = h.sn.Prepare(ctx, "scratch", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	target, _ = mount(t, m)
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("f"), 0o644); err != nil {
		t.Errorf("write to an empty active snapshot: %v", err)
	}
}

func testWhiteout(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"), file("b", "B"), file("d/x", "X"), file("d/keep", "K"))
	h.apply(t, "child", "base", whiteout("a"), whiteout("d/x"))
	target, _ := h.mountKey(t, "child")
	checkTree(t, target, map[string]string{"a": absent, "b": "B", "d": isDir, "d/x": absent, "d/keep": "K"})
	// Deleting through an active mount hides a lower file after Commit.
	m, err := h.sn.Prepare(ctx, "active", "child", nil)
	if err != nil {
		t.Fatal(err)
	}
	target, unmount := mount(t, m)
	if err := os.Remove(filepath.Join(target, "b")); err != nil {
		t.Fatal(err)
	}
	unmount()
	if err := h.sn.Commit(ctx, "gone-b", "active", nil); err != nil {
		t.Fatal(err)
	}
	target, _ = h.mountKey(t, "gone-b")
	checkTree(t, target, map[string]string{"a": absent, "b": absent, "d/keep": "K"})
}

func testOpaqueDir(t *testing.T, h *harness) {
	h.apply(t, "base", "", file("d/x", "X"), file("d/sub/y", "Y"), file("other", "O"))
	h.apply(t, "child", "base", opaque("d"), file("d/z", "Z"))
	target, _ := h.mountKey(t, "child")
	checkTree(t, target, map[string]string{"d/z": "Z", "other": "O"})
	if got := names(t, filepath.Join(target, "d")); !slices.Equal(got, []string{"z"}) {
		t.Errorf("opaque dir lists %v, want [z]", got)
	}
}

func testViewReadOnly(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"))
	h.apply(t, "child", "base", file("b", "B"))
	for _, parent := range []string{"base", "child"} {
		key := "view-" + parent
		m, err := h.sn.View(ctx, key, parent, map[string]string{"v": "1"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := h.sn.Stat(ctx, key)
		if err != nil || st.Kind != snapshots.KindView || st.Parent != parent {
			t.Errorf("Stat(%s) = %+v, %v", key, st, err)
		}
		target, _ := mount(t, m)
		checkTree(t, target, map[string]string{"a": "A"})
		err = os.WriteFile(filepath.Join(target, "w"), []byte("w"), 0o644)
		wantErr(t, "write through a view", err, unix.EROFS)
	}
	// A committed snapshot's Mounts are read-only too.
	target, _ := h.mountKey(t, "child")
	err := os.WriteFile(filepath.Join(target, "w"), []byte("w"), 0o644)
	wantErr(t, "write through a committed snapshot's mounts", err, unix.EROFS)
	// An empty view.
	m, err := h.sn.View(ctx, "empty", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	target, _ = mount(t, m)
	if n := names(t, target); len(n) != 0 {
		t.Errorf("empty view lists %v", n)
	}
	err = h.sn.Commit(ctx, "from-view", "view-base", nil)
	wantErr(t, "Commit of a view", err, errdefs.ErrFailedPrecondition)
}

func testCommitErrors(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"))
	err := h.sn.Commit(ctx, "x", "missing", nil)
	wantErr(t, "Commit missing key", err, errdefs.ErrNotFound)
	err = h.sn.Commit(ctx, "x", "base", nil)
	wantErr(t, "Commit committed", err, errdefs.ErrFailedPrecondition)
	if _, err := h.sn.Prepare(ctx, "active", "base", nil); err != nil {
		t.Fatal(err)
	}
	_, err = h.sn.Prepare(ctx, "active", "base", nil)
	wantErr(t, "Prepare existing key", err, errdefs.ErrAlreadyExists)
	_, err = h.sn.Prepare(ctx, "base", "", nil)
	wantErr(t, "Prepare over a committed name", err, errdefs.ErrAlreadyExists)
	_, err = h.sn.Prepare(ctx, "other", "missing", nil)
	wantErr(t, "Prepare missing parent", err, errdefs.ErrNotFound)
	_, err = h.sn.Prepare(ctx, "other", "active", nil)
	wantErr(t, "Prepare over an active parent", err, errdefs.ErrFailedPrecondition)
	_, err = h.sn.ApplyLayer(ctx, "layer", "active", nil, h.fill())
	wantErr(t, "ApplyLayer over an active parent", err, errdefs.ErrFailedPrecondition)
	err = h.sn.Commit(ctx, "base", "active", nil)
	wantErr(t, "Commit to an existing name", err, errdefs.ErrAlreadyExists)
	if _, err := h.sn.Stat(ctx, "active"); err != nil {
		t.Errorf("a failed Commit lost the active snapshot: %v", err)
	}
	if err := h.sn.Commit(ctx, "done", "active", nil); err != nil {
		t.Fatal(err)
	}
	err = h.sn.Commit(ctx, "again", "active", nil)
	wantErr(t, "Commit twice", err, errdefs.ErrNotFound)
}

func testRemoveWithChildren(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"))
	h.apply(t, "child", "base", file("b", "B"))
	if _, err := h.sn.Prepare(ctx, "active", "child", nil); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Remove(base)", h.sn.Remove(ctx, "base"), errdefs.ErrFailedPrecondition)
	wantErr(t, "Remove(child)", h.sn.Remove(ctx, "child"), errdefs.ErrFailedPrecondition)
	for _, k := range []string{"active", "child", "base"} {
		if err := h.sn.Remove(ctx, k); err != nil {
			t.Fatalf("Remove(%s): %v", k, err)
		}
		_, err := h.sn.Stat(ctx, k)
		wantErr(t, "Stat after Remove", err, errdefs.ErrNotFound)
	}
	wantErr(t, "Remove twice", h.sn.Remove(ctx, "base"), errdefs.ErrNotFound)
	if n := walkKeys(t, h.sn); len(n) != 0 {
		t.Errorf("Walk after removing all = %v", n)
	}
	if l := settled(t, h.root, 0); len(l) != 0 {
		t.Errorf("Remove left %v", l)
	}
	// A removed name can be applied again.
	h.apply(t, "base", "", file("a", "again"))
	target, _ := h.mountKey(t, "base")
	checkTree(t, target, map[string]string{"a": "again"})
}

func walkKeys(t *testing.T, sn snapshots.Snapshotter) map[string]snapshots.Kind {
	t.Helper()
	got := map[string]snapshots.Kind{}
	if err := sn.Walk(t.Context(), func(i snapshots.Info) error {
		got[i.Key] = i.Kind
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func testWalk(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"))
	h.apply(t, "child", "base", file("b", "B"))
	if _, err := h.sn.Prepare(ctx, "active", "child", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sn.View(ctx, "view", "base", nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]snapshots.Kind{
		"base": snapshots.KindCommitted, "child": snapshots.KindCommitted,
		"active": snapshots.KindActive, "view": snapshots.KindView,
	}
	if got := walkKeys(t, h.sn); !maps.Equal(got, want) {
		t.Errorf("Walk = %v, want %v", got, want)
	}
	// fn may call the snapshotter, and its error stops the walk.
	stop := errors.New("stop")
	calls := 0
	err := h.sn.Walk(ctx, func(i snapshots.Info) error {
		calls++
		if _, err := h.sn.Stat(ctx, i.Key); err != nil {
			t.Errorf("Stat inside Walk: %v", err)
		}
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Walk with a failing fn: %v after %d calls; want stop after 1", err, calls)
	}
}

func testStatUsage(t *testing.T, h *harness) {
	ctx := t.Context()
	const mib = 1 << 20
	big := strings.Repeat("x", mib)
	before := time.Now().Add(-time.Second)
	info := h.apply(t, "base", "", file("big", big), file("d/small", "s"))
	if info.Created.Before(before) || info.Updated.Before(info.Created) {
		t.Errorf("times: created %v updated %v, want after %v", info.Created, info.Updated, before)
	}
	u, err := h.sn.Usage(ctx, "base")
	if err != nil {
		t.Fatal(err)
	}
	if u.Size < mib || u.Inodes < 4 {
		t.Errorf("Usage(base) = %+v, want ≥ 1 MiB and ≥ 4 inodes", u)
	}
	m, err := h.sn.Prepare(ctx, "active", "base", nil)
	if err != nil {
		t.Fatal(err)
	}
	u0, err := h.sn.Usage(ctx, "active")
	if err != nil {
		t.Fatal(err)
	}
	target, unmount := mount(t, m)
	if err := os.WriteFile(filepath.Join(target, "more"), []byte(strings.Repeat("y", mib/2)), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount()
	u1, err := h.sn.Usage(ctx, "active")
	if err != nil {
		t.Fatal(err)
	}
	if u1.Size-u0.Size < mib/2 || u1.Inodes != u0.Inodes+1 {
		t.Errorf("Usage(active) went from %+v to %+v after writing one 512 KiB file", u0, u1)
	}
	if err := h.sn.Commit(ctx, "c", "active", nil); err != nil {
		t.Fatal(err)
	}
	u2, err := h.sn.Usage(ctx, "c")
	if err != nil || u2 != u1 {
		t.Errorf("Usage after Commit = %+v, %v; want %+v", u2, err, u1)
	}
	st, err := h.sn.Stat(ctx, "c")
	if err != nil || st.Created.After(st.Updated) {
		t.Errorf("Stat(c) = %+v, %v", st, err)
	}
}

func testLabels(t *testing.T, h *harness) {
	ctx := t.Context()
	labels := map[string]string{"containerd.io/snapshot/layer": "yes", "k": "v"}
	if _, err := h.sn.ApplyLayer(ctx, "base", "", labels, h.fill(file("a", "A"))); err != nil {
		t.Fatal(err)
	}
	labels["k"] = "changed by the caller"
	st, err := h.sn.Stat(ctx, "base")
	if err != nil || st.Labels["k"] != "v" || len(st.Labels) != 2 {
		t.Errorf("Stat(base).Labels = %v, %v; want the labels as passed", st.Labels, err)
	}
	st.Labels["k"] = "changed by the reader"
	if st, _ := h.sn.Stat(ctx, "base"); st.Labels["k"] != "v" {
		t.Error("labels returned by Stat alias the stored ones")
	}
	if _, err := h.sn.Prepare(ctx, "active", "base", map[string]string{"p": "1"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.sn.Stat(ctx, "active"); st.Labels["p"] != "1" {
		t.Errorf("Stat(active).Labels = %v", st.Labels)
	}
	if err := h.sn.Commit(ctx, "c", "active", map[string]string{"c": "2"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.sn.Stat(ctx, "c"); !maps.Equal(st.Labels, map[string]string{"c": "2"}) {
		t.Errorf("Stat(c).Labels = %v, want the Commit's labels", st.Labels)
	}
	found := false
	_ = h.sn.Walk(ctx, func(i snapshots.Info) error {
		if i.Key == "base" {
			found = i.Labels["containerd.io/snapshot/layer"] == "yes"
		}
		return nil
	})
	if !found {
		t.Error("Walk does not report base's labels")
	}
	if _, err := h.sn.ApplyLayer(ctx, "bare", "", nil, h.fill()); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.sn.Stat(ctx, "bare"); len(st.Labels) != 0 {
		t.Errorf("Stat(bare).Labels = %v, want none", st.Labels)
	}
}

// snapshotDir finds the snapshot directory whose fs holds marker.
func snapshotDir(t *testing.T, root, marker string) string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(root, "snapshots", "*", "fs", marker))
	if err != nil || len(matches) != 1 {
		t.Fatalf("finding the dir with %s: %v, %v", marker, matches, err)
	}
	return filepath.Dir(filepath.Dir(matches[0]))
}

func testReopenReconcile(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("marker-base", "B"))
	h.apply(t, "child", "base", file("marker-child", "C"))
	h.apply(t, "lost", "", file("marker-lost", "L"))
	if _, err := h.sn.Prepare(ctx, "active", "child", map[string]string{"l": "1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.sn.Close(); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves: an apply cut short in tmp/, a directory renamed
	// into place but never recorded, and (lost outside our control) a
	// recorded snapshot's directory gone.
	for _, p := range []string{"tmp/apply-123/fs/half", "snapshots/987654/fs/orphan"} {
		full := filepath.Join(h.root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(snapshotDir(t, h.root, "marker-lost")); err != nil {
		t.Fatal(err)
	}

	h.sn = h.reopen(t)
	for _, p := range []string{"tmp/apply-123", "snapshots/987654"} {
		if _, err := os.Lstat(filepath.Join(h.root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived reopening: %v", p, err)
		}
	}
	_, err := h.sn.Stat(ctx, "lost")
	wantErr(t, "Stat of a snapshot whose dir vanished", err, errdefs.ErrNotFound)
	want := map[string]snapshots.Kind{"base": snapshots.KindCommitted, "child": snapshots.KindCommitted, "active": snapshots.KindActive}
	if got := walkKeys(t, h.sn); !maps.Equal(got, want) {
		t.Errorf("after reopen Walk = %v, want %v", got, want)
	}
	if st, err := h.sn.Stat(ctx, "active"); err != nil || st.Labels["l"] != "1" || st.Parent != "child" {
		t.Errorf("Stat(active) after reopen = %+v, %v", st, err)
	}
	target, _ := h.mountKey(t, "active")
	checkTree(t, target, map[string]string{"marker-base": "B", "marker-child": "C"})
	if err := os.WriteFile(filepath.Join(target, "w"), []byte("w"), 0o644); err != nil {
		t.Errorf("write to an active snapshot after reopen: %v", err)
	}
	// The lost name can be applied again, and new snapshots get fresh dirs.
	h.apply(t, "lost", "", file("marker-lost", "L2"))
	h.apply(t, "new", "child", file("marker-new", "N"))
	target, _ = h.mountKey(t, "new")
	checkTree(t, target, map[string]string{"marker-base": "B", "marker-child": "C", "marker-new": "N"})
	target, _ = h.mountKey(t, "lost")
	checkTree(t, target, map[string]string{"marker-lost": "L2"})
}

func testClose(t *testing.T, h *harness) {
	ctx := t.Context()
	h.apply(t, "base", "", file("a", "A"))
	if err := h.sn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.sn.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err := h.sn.Stat(ctx, "base")
	wantErr(t, "Stat after Close", err, errdefs.ErrUnavailable)
	_, err = h.sn.ApplyLayer(ctx, "x", "", nil, h.fill())
	wantErr(t, "ApplyLayer after Close", err, errdefs.ErrUnavailable)
	_, err = h.sn.Prepare(ctx, "x", "", nil)
	wantErr(t, "Prepare after Close", err, errdefs.ErrUnavailable)
	wantErr(t, "Remove after Close", h.sn.Remove(ctx, "base"), errdefs.ErrUnavailable)
}

// testConcurrentLifecycle runs whole lifecycles at once against one
// snapshotter, for the race detector and for deadlocks. Workers also try to
// remove the shared base, which must fail while a child exists and may
// succeed otherwise (the next worker applies it again).
func testConcurrentLifecycle(t *testing.T, h *harness) {
	ctx := t.Context()
	const workers, rounds = 6, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				key := fmt.Sprintf("active-%d-%d", w, r)
				name := fmt.Sprintf("committed-%d-%d", w, r)
				var err error
				for range 100 {
					_, err = h.sn.ApplyLayer(ctx, "base", "", nil, h.fill(file("a", "A")))
					if err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
						t.Errorf("ApplyLayer: %v", err)
						return
					}
					// base may be removed in between by another worker.
					if _, err = h.sn.Prepare(ctx, key, "base", nil); !errors.Is(err, errdefs.ErrNotFound) {
						break
					}
				}
				if err != nil {
					t.Errorf("Prepare: %v", err)
					return
				}
				if _, err := h.sn.Usage(ctx, key); err != nil {
					t.Errorf("Usage: %v", err)
				}
				if err := h.sn.Commit(ctx, name, key, nil); err != nil {
					t.Errorf("Commit: %v", err)
					return
				}
				if _, err := h.sn.View(ctx, "view-"+name, name, nil); err != nil {
					t.Errorf("View: %v", err)
					return
				}
				if err := h.sn.Remove(ctx, name); !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("Remove of a viewed snapshot: %v", err)
				}
				if err := h.sn.Remove(ctx, "base"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
					t.Errorf("Remove(base) under a committed child: %v", err)
				}
				for _, k := range []string{"view-" + name, name} {
					if err := h.sn.Remove(ctx, k); err != nil {
						t.Errorf("Remove(%s): %v", k, err)
					}
				}
				err = h.sn.Remove(ctx, "base")
				if err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("Remove(base): %v", err)
				}
				_ = h.sn.Walk(ctx, func(snapshots.Info) error { return nil })
			}
		})
	}
	wg.Wait()
	got := walkKeys(t, h.sn)
	if _, hasBase := got["base"]; len(got) > 1 || len(got) == 1 && !hasBase {
		t.Errorf("after the lifecycles Walk = %v, want at most base", got)
	}
	if l := settled(t, h.root, len(got)); len(l) != len(got) {
		t.Errorf("after the lifecycles %d snapshots but %v on disk", len(got), l)
	}
}
