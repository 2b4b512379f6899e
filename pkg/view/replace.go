package view

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Replace puts the view stored in dir fresh in the place of the view stored
// in dir, atomically where the kernel can: a crash leaves either the old
// view or the new one at dir, never neither or a mix. The old view is then
// removed. Neither view may be open. A view that does not exist at dir yet
// is simply moved into place.
func Replace(dir, fresh string) error {
	if err := replace(dir, fresh); err != nil {
		return fmt.Errorf("replace view %s with %s: %w", dir, fresh, err)
	}
	return nil
}

func replace(dir, fresh string) error {
	if _, err := os.Stat(fresh); err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	_, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Rename(fresh, dir); err != nil {
			return err
		}
		return syncDir(parent)
	case err != nil:
		return err
	}
	// Exchange the two names in one step; fresh then names the old view.
	err = unix.Renameat2(unix.AT_FDCWD, fresh, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No exchange on this filesystem: move the old view aside first.
		// A crash in between leaves no view at dir; the old one is at
		// dir+".old" and the new one at fresh.
		old := dir + ".old"
		if err := os.RemoveAll(old); err != nil {
			return err
		}
		if err := os.Rename(dir, old); err != nil {
			return err
		}
		if err := os.Rename(fresh, dir); err != nil {
			return err
		}
		fresh = old
	} else if err != nil {
		return err
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	return os.RemoveAll(fresh)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
