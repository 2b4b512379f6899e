//go:build !linux

package snapshots

import (
	"fmt"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// MaxOverlayLayers is the most lower directories one overlay mount can stack
// (the kernel's OVL_MAX_STACK).
const MaxOverlayLayers = 500

// MountAll is only implemented on Linux; elsewhere it returns an error
// wrapping errdefs.ErrUnavailable.
func MountAll(mounts []Mount, target string) error {
	return fmt.Errorf("mount on %s: snapshots are mounted only on Linux: %w", target, errdefs.ErrUnavailable)
}

// UnmountAll is only implemented on Linux; elsewhere it returns an error
// wrapping errdefs.ErrUnavailable.
func UnmountAll(target string) error {
	return fmt.Errorf("unmount %s: snapshots are mounted only on Linux: %w", target, errdefs.ErrUnavailable)
}

// OverlaySupported returns an error wrapping errdefs.ErrUnavailable: overlayfs
// is Linux only.
func OverlaySupported(root string) error {
	return fmt.Errorf("overlayfs is not usable under %s: not Linux: %w", root, errdefs.ErrUnavailable)
}
