//go:build linux

package snapshots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// MaxOverlayLayers is the most lower directories one overlay mount can stack
// (the kernel's OVL_MAX_STACK).
const MaxOverlayLayers = 500

// maxMountData is the most bytes of filesystem data (the options that are
// not flags) mount(2) accepts: one page, NUL included.
var maxMountData = os.Getpagesize() - 1

// Unmount retry schedule: on EBUSY, UnmountAll retries with doubling delays
// starting at unmountRetryDelay for unmountRetries times, then detaches the
// mount lazily (MNT_DETACH).
const (
	unmountRetries    = 6
	unmountRetryDelay = 5 * time.Millisecond
	// maxStacked bounds how many mounts stacked on one target UnmountAll
	// removes, so a target that keeps being remounted cannot loop forever.
	maxStacked = 64
)

// mountFlags maps mount(8) flag options to mount(2) flags: the flags an
// option sets, and whether it clears them instead.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"bind":        {false, unix.MS_BIND},
	"rbind":       {false, unix.MS_BIND | unix.MS_REC},
	"ro":          {false, unix.MS_RDONLY},
	"rw":          {true, unix.MS_RDONLY},
	"nosuid":      {false, unix.MS_NOSUID},
	"suid":        {true, unix.MS_NOSUID},
	"nodev":       {false, unix.MS_NODEV},
	"dev":         {true, unix.MS_NODEV},
	"noexec":      {false, unix.MS_NOEXEC},
	"exec":        {true, unix.MS_NOEXEC},
	"noatime":     {false, unix.MS_NOATIME},
	"atime":       {true, unix.MS_NOATIME},
	"nodiratime":  {false, unix.MS_NODIRATIME},
	"relatime":    {false, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"sync":        {false, unix.MS_SYNCHRONOUS},
	"async":       {true, unix.MS_SYNCHRONOUS},
}

// parseOptions splits mount(8) options into mount(2) flags and the
// filesystem data options.
func parseOptions(options []string) (flags uintptr, data []string) {
	for _, o := range options {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		data = append(data, o)
	}
	return flags, data
}

// MountAll mounts mounts, in order, on target (an existing directory). If
// one fails, the ones already made are unmounted again and the error is
// returned, wrapping the errno and an errdefs class (EPERM:
// ErrPermissionDenied, ENOENT: ErrNotFound, EBUSY: ErrUnavailable, an
// overlay too deep or with options over the kernel's limit:
// ErrResourceExhausted, others: ErrInternal).
//
// Bind mounts with "ro" are made read-only with a second, remounting call,
// as the kernel ignores MS_RDONLY on the bind itself. Overlay mounts whose
// options exceed mount(2)'s one-page limit are made with the new mount API
// (fsopen(2), one "lowerdir+" per layer; Linux 6.8 or later).
func MountAll(mounts []Mount, target string) error {
	for i, m := range mounts {
		if err := mountOne(m, target); err != nil {
			if i > 0 {
				if uerr := UnmountAll(target); uerr != nil {
					err = errors.Join(err, uerr)
				}
			}
			return err
		}
	}
	return nil
}

func mountOne(m Mount, target string) error {
	flags, data := parseOptions(m.Options)
	typ := m.Type
	if flags&unix.MS_BIND != 0 || typ == "bind" {
		flags |= unix.MS_BIND
		typ = ""
	}
	joined := strings.Join(data, ",")
	if m.Type == "overlay" && len(joined) > maxMountData {
		return mountOverlayFS(m, flags, data, target)
	}
	if err := unix.Mount(m.Source, target, typ, flags, joined); err != nil {
		return mountError(m, target, err)
	}
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		keep := flags & (unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|keep, ""); err != nil {
			err = mountError(m, target, fmt.Errorf("remount read-only: %w", err))
			if uerr := unmount(target); uerr != nil {
				err = errors.Join(err, uerr)
			}
			return err
		}
	}
	return nil
}

// mountOverlayFS mounts an overlay with the new mount API, which takes each
// option separately and each lower dir with "lowerdir+", so no page limit
// applies.
func mountOverlayFS(m Mount, flags uintptr, data []string, target string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return mountError(m, target, fmt.Errorf("fsopen: %w", err))
	}
	defer unix.Close(fd)
	for _, o := range data {
		var err error
		k, v, hasValue := strings.Cut(o, "=")
		switch {
		case k == "lowerdir":
			for _, l := range strings.Split(v, ":") {
				if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
					return fmt.Errorf("mount overlay on %s: options are %d bytes, over mount(2)'s %d-byte limit, and this kernel refused lowerdir+ (needs Linux 6.8+): %w: %w",
						target, len(strings.Join(data, ",")), maxMountData, errdefs.ErrResourceExhausted, err)
				}
			}
		case hasValue:
			err = unix.FsconfigSetString(fd, k, v)
		default:
			err = unix.FsconfigSetFlag(fd, k)
		}
		if err != nil {
			return mountError(m, target, fmt.Errorf("fsconfig %s: %w", k, err))
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return mountError(m, target, fmt.Errorf("fsconfig create: %w", err))
	}
	var attrs int
	for f, a := range map[uintptr]int{
		unix.MS_RDONLY: unix.MOUNT_ATTR_RDONLY, unix.MS_NOSUID: unix.MOUNT_ATTR_NOSUID,
		unix.MS_NODEV: unix.MOUNT_ATTR_NODEV, unix.MS_NOEXEC: unix.MOUNT_ATTR_NOEXEC,
		unix.MS_NOATIME: unix.MOUNT_ATTR_NOATIME,
	} {
		if flags&f != 0 {
			attrs |= a
		}
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return mountError(m, target, fmt.Errorf("fsmount: %w", err))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return mountError(m, target, fmt.Errorf("move_mount: %w", err))
	}
	return nil
}

// mountError wraps a failed mount's error with the command that failed and
// an errdefs class.
func mountError(m Mount, target string, err error) error {
	return fmt.Errorf("%s (target %s): %w: %w", m, target, errnoClass(err), err)
}

func errnoClass(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return errdefs.ErrPermissionDenied
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return errdefs.ErrNotFound
	case errors.Is(err, unix.EBUSY):
		return errdefs.ErrUnavailable
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.E2BIG):
		return errdefs.ErrResourceExhausted
	default:
		return errdefs.ErrInternal
	}
}

// UnmountAll unmounts every mount stacked on target, top-most first, and
// returns nil once target is not a mount point (or does not exist). A
// mount that stays busy (EBUSY) is retried with backoff for about 300ms and
// then detached lazily (MNT_DETACH): it disappears from target at once and
// the kernel frees it when the last user goes. Symlinks at target are not
// followed. Errors wrap the errno and an errdefs class.
func UnmountAll(target string) error {
	for range maxStacked {
		if err := unmount(target); err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil // not (or no longer) a mount point
			}
			return err
		}
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts: %w", target, maxStacked, errdefs.ErrResourceExhausted)
}

// unmount removes the top-most mount at target, retrying on EBUSY and
// detaching lazily as a last resort. EINVAL (not a mount point) is returned
// unwrapped for UnmountAll.
func unmount(target string) error {
	delay := unmountRetryDelay
	for range unmountRetries {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		if err == nil || !errors.Is(err, unix.EBUSY) {
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w: %w", target, errnoClass(err), err)
			}
			return err
		}
		time.Sleep(delay)
		delay *= 2
	}
	if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return err
		}
		return fmt.Errorf("unmount %s lazily: %w: %w", target, errnoClass(err), err)
	}
	return nil
}

// OverlaySupported reports whether overlayfs works with its directories
// under root: it really mounts a two-layer overlay in a temporary directory
// under root (created if needed), checks that a lower file shows through and
// that a write lands in the upper directory, and removes it all again. It
// returns nil if it works, else an error wrapping errdefs.ErrUnavailable that
// says why (no overlay in the kernel, not root, a filesystem overlay cannot
// use as upper).
func OverlaySupported(root string) error {
	unavailable := func(format string, args ...any) error {
		return fmt.Errorf("overlayfs is not usable under %s: %s: %w", root, fmt.Sprintf(format, args...), errdefs.ErrUnavailable)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return unavailable("%v", err)
	}
	dir, err := os.MkdirTemp(root, ".overlay-check-")
	if err != nil {
		return unavailable("%v", err)
	}
	defer os.RemoveAll(dir)
	var (
		lower1 = filepath.Join(dir, "l1")
		lower2 = filepath.Join(dir, "l2")
		upper  = filepath.Join(dir, "u")
		work   = filepath.Join(dir, "w")
		merged = filepath.Join(dir, "m")
	)
	for _, d := range []string{lower1, lower2, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return unavailable("%v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower1, "f"), []byte("lower"), 0o644); err != nil {
		return unavailable("%v", err)
	}
	opts := overlayIndexOff()
	opts = append(opts, "workdir="+work, "upperdir="+upper, "lowerdir="+lower2+":"+lower1)
	m := Mount{Type: "overlay", Source: "overlay", Options: opts}
	if err := MountAll([]Mount{m}, merged); err != nil {
		reason := err.Error()
		switch {
		case errors.Is(err, unix.ENODEV):
			reason = "the kernel has no overlay filesystem (modprobe overlay)"
		case errors.Is(err, unix.EPERM):
			reason = "mount is not permitted (needs root or CAP_SYS_ADMIN): " + reason
		}
		return unavailable("%s", reason)
	}
	defer UnmountAll(merged)
	if b, err := os.ReadFile(filepath.Join(merged, "f")); err != nil || string(b) != "lower" {
		return unavailable("a lower file does not show through the overlay (read %q, %v)", b, err)
	}
	if err := os.WriteFile(filepath.Join(merged, "g"), []byte("upper"), 0o644); err != nil {
		return unavailable("cannot write through the overlay: %v", err)
	}
	if _, err := os.Stat(filepath.Join(upper, "g")); err != nil {
		return unavailable("a write through the overlay did not reach the upper dir: %v", err)
	}
	if err := UnmountAll(merged); err != nil {
		return unavailable("%v", err)
	}
	return nil
}

// overlayIndexOff returns the options that turn overlay's inodes index off
// when the kernel has that feature (["index=off"]), else nil. With the index
// on, a lower dir shared by many mounts and reused upper dirs can make later
// mounts fail; containerd turns it off the same way.
func overlayIndexOff() []string {
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		return []string{"index=off"}
	}
	return nil
}
