//go:build linux

package snapshots_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts and needs root")
		}
		t.Skip("needs root")
	}
}

// isMountPoint reports whether dir is a mount point (its device differs
// from its parent's or it is a bind of the same device: compare mount ids).
func isMountPoint(t *testing.T, dir string) bool {
	t.Helper()
	var a, b unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statx(unix.AT_FDCWD, filepath.Dir(dir), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &b); err != nil {
		t.Fatal(err)
	}
	return a.Mnt_id != b.Mnt_id
}

func TestOverlaySupported(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	if err := snapshots.OverlaySupported(root); err != nil {
		if os.Getenv("CI") == "true" || !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("OverlaySupported left %v", entries)
	}
}

func TestUnmountAllNotMounted(t *testing.T) {
	dir := t.TempDir()
	if err := snapshots.UnmountAll(dir); err != nil {
		t.Errorf("UnmountAll of a plain dir: %v", err)
	}
	if err := snapshots.UnmountAll(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("UnmountAll of a missing dir: %v", err)
	}
}

func TestMountAllStackedAndBusy(t *testing.T) {
	needRoot(t)
	src1, src2, target := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src2, "f"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts := []snapshots.Mount{
		{Type: "bind", Source: src1, Options: []string{"rbind", "rw"}},
		{Type: "bind", Source: src2, Options: []string{"rbind", "ro"}},
	}
	if err := snapshots.MountAll(mounts, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = snapshots.UnmountAll(target) })
	if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "2" {
		t.Errorf("top mount not visible: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "g"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to a ro bind: %v, want EROFS", err)
	}
	// An open file keeps the mount busy: UnmountAll retries, then detaches.
	f, err := os.Open(filepath.Join(target, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := snapshots.UnmountAll(target); err != nil {
		t.Fatalf("UnmountAll of a busy target: %v", err)
	}
	if isMountPoint(t, target) {
		t.Error("target is still a mount point")
	}
}

func TestMountAllRollsBack(t *testing.T) {
	needRoot(t)
	src, target := t.TempDir(), t.TempDir()
	mounts := []snapshots.Mount{
		{Type: "bind", Source: src, Options: []string{"rbind"}},
		{Type: "bind", Source: filepath.Join(src, "missing"), Options: []string{"rbind"}},
	}
	err := snapshots.MountAll(mounts, target)
	if !errors.Is(err, errdefs.ErrNotFound) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("MountAll with a missing source: %v, want ErrNotFound and ENOENT", err)
	}
	if isMountPoint(t, target) {
		t.Error("a failed MountAll left a mount behind")
		_ = snapshots.UnmountAll(target)
	}
}
