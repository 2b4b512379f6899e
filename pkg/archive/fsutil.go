package archive

import (
	"errors"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openDir opens dir (following symlinks: it is the caller's path) as a
// directory fd for *at calls.
func openDir(dir string) (int, error) {
	for {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

// openBeneath opens rel below dirfd with openat2(2), refusing to leave
// dirfd and to follow any symlink (ELOOP) or magic link on the way.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dirfd, rel, &how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // EAGAIN: a concurrent rename somewhere; retry
		}
		return fd, err
	}
}

// openNoFollow opens the single component name in dirfd without following
// it if it is a symlink.
func openNoFollow(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

// writeAll writes b to fd.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		b = b[n:]
	}
	return nil
}

// futimens sets atime and mtime of an open fd (utimensat with a NULL path).
func futimens(fd int, ts *[2]unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// fchmodatNoFollow changes the mode of name in dirfd without following a
// symlink (fchmodat2, Linux 6.6). Older kernels fall back to fchmodat,
// which follows: acceptable because name was just created by us as a
// non-symlink in a directory only we write to.
func fchmodatNoFollow(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Fchmodat(dirfd, name, mode, 0)
	}
	return err
}

// procPath names name in the directory open as dirfd through /proc.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// removeAllAt removes name in dirfd, recursively if it is a directory,
// never following symlinks. A missing name is not an error. isDir reports
// whether a directory was (or was being) removed.
func removeAllAt(dirfd int, name string) (isDir bool, err error) {
	err = unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return false, err
	}
	fd, err := openNoFollow(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return true, err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			if _, err = removeAllAt(fd, n); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return true, err
	}
	return true, unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// readDirNames lists a directory open as fd, without "." and "..".
func readDirNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	buf := make([]byte, 32<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}
