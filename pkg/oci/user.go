package oci

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// maxID is the largest uid/gid accepted (as runc).
const maxID = 1<<31 - 1

// maxDBSize caps how much of /etc/passwd or /etc/group is read.
const maxDBSize = 16 << 20

// execUser is a resolved container user.
type execUser struct {
	UID, GID       uint32
	AdditionalGids []uint32
	Home           string
}

type passwdEntry struct {
	name     string
	uid, gid int64
	home     string
}

type groupEntry struct {
	name    string
	gid     int64
	members []string
}

// resolveUser resolves spec against the rootfs's /etc/passwd and /etc/group,
// with runc's (and so Docker's) rules:
//   - an empty user part ("" or ":group") is uid 0;
//   - the user part matches an entry by name or, if numeric, by uid; a numeric
//     uid with no entry is allowed (gid 0, home "/"), an unknown name is not;
//   - an explicit group (name or gid) sets the primary gid; a numeric gid
//     need not exist, a group name must;
//   - without an explicit group, the groups listing the user's name are its
//     additional groups.
func resolveUser(root *os.File, spec string) (execUser, error) {
	userArg, groupArg, hasGroup := strings.Cut(spec, ":")
	if userArg == "" {
		userArg = "0" // "" and ":group" are root, as runc
	}
	if hasGroup && groupArg == "" {
		return execUser{}, fmt.Errorf("invalid user %q: %w", spec, errdefs.ErrInvalidArgument)
	}
	uidArg, uidErr := parseID(userArg)
	if uidErr != nil && !errors.Is(uidErr, strconv.ErrSyntax) {
		return execUser{}, fmt.Errorf("invalid user %q: uid out of range: %w", spec, errdefs.ErrInvalidArgument)
	}
	gidArg, gidErr := int64(0), error(nil)
	if hasGroup {
		gidArg, gidErr = parseID(groupArg)
		if gidErr != nil && !errors.Is(gidErr, strconv.ErrSyntax) {
			return execUser{}, fmt.Errorf("invalid user %q: gid out of range: %w", spec, errdefs.ErrInvalidArgument)
		}
	}

	passwd, err := readRootFile(root, "/etc/passwd")
	if err != nil {
		return execUser{}, err
	}
	var pw *passwdEntry
	for _, e := range parsePasswd(passwd) {
		if e.name == userArg || (uidErr == nil && e.uid == uidArg) {
			pw = &e
			break
		}
	}
	u := execUser{Home: "/"}
	name := ""
	switch {
	case pw != nil:
		u.UID, u.GID, name = uint32(pw.uid), uint32(pw.gid), pw.name
		if pw.home != "" {
			u.Home = pw.home
		}
	case uidErr != nil:
		return execUser{}, fmt.Errorf("unable to find user %s: no matching entries in passwd file: %w", userArg, errdefs.ErrNotFound)
	default:
		u.UID = uint32(uidArg)
	}

	if !hasGroup && name == "" {
		return u, nil
	}
	groupData, err := readRootFile(root, "/etc/group")
	if err != nil {
		return execUser{}, err
	}
	groups := parseGroup(groupData)
	if hasGroup {
		for _, g := range groups {
			if (gidErr != nil && g.name == groupArg) || (gidErr == nil && g.gid == gidArg) {
				u.GID = uint32(g.gid)
				return u, nil
			}
		}
		if gidErr != nil {
			return execUser{}, fmt.Errorf("unable to find group %s: no matching entries in group file: %w", groupArg, errdefs.ErrNotFound)
		}
		u.GID = uint32(gidArg)
		return u, nil
	}
	seen := map[uint32]bool{}
	for _, g := range groups {
		for _, m := range g.members {
			if m == name && !seen[uint32(g.gid)] {
				seen[uint32(g.gid)] = true
				u.AdditionalGids = append(u.AdditionalGids, uint32(g.gid))
				break
			}
		}
	}
	return u, nil
}

// parseID parses a uid or gid; the error wraps strconv.ErrSyntax when s is
// not a number at all (so it is a name).
func parseID(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, err
		}
		return 0, strconv.ErrSyntax
	}
	if n < 0 || n > maxID {
		return 0, strconv.ErrRange
	}
	return n, nil
}

// parsePasswd parses passwd(5) lines, skipping blank, comment, NIS ("+"/"-")
// and malformed lines.
func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	forLines(data, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] == "" {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if err1 != nil || err2 != nil {
			return
		}
		e := passwdEntry{name: f[0], uid: uid, gid: gid}
		if len(f) > 5 {
			e.home = f[5]
		}
		out = append(out, e)
	})
	return out
}

// parseGroup parses group(5) lines, skipping what parsePasswd skips.
func parseGroup(data []byte) []groupEntry {
	var out []groupEntry
	forLines(data, func(line string) {
		f := strings.Split(line, ":")
		if len(f) < 3 || f[0] == "" {
			return
		}
		gid, err := parseID(f[2])
		if err != nil {
			return
		}
		e := groupEntry{name: f[0], gid: gid}
		if len(f) > 3 && f[3] != "" {
			for _, m := range strings.Split(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					e.members = append(e.members, m)
				}
			}
		}
		out = append(out, e)
	})
	return out
}

func forLines(data []byte, fn func(string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), len(data)+1)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fn(line)
	}
}

// readRootFile reads the regular file at name inside root, resolving every
// symlink with root as "/". A missing file reads as empty.
func readRootFile(root *os.File, name string) ([]byte, error) {
	h, err := pathrs.OpenatInRoot(root, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			return nil, nil
		}
		return nil, fmt.Errorf("open %s in rootfs: %w", name, err)
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s in rootfs: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s in rootfs is not a regular file: %w", name, errdefs.ErrInvalidArgument)
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY)
	if err != nil {
		return nil, fmt.Errorf("open %s in rootfs: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxDBSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s in rootfs: %w", name, err)
	}
	if len(data) > maxDBSize {
		return nil, fmt.Errorf("%s in rootfs is larger than %d bytes: %w", name, maxDBSize, errdefs.ErrResourceExhausted)
	}
	return data, nil
}

// ensureWorkdir makes sure dir (absolute, clean) is a directory inside root,
// creating it and any missing parents owned by uid:gid. Every component is
// resolved with root as "/".
func ensureWorkdir(root *os.File, dir string, uid, gid uint32) error {
	notDir := fmt.Errorf("working directory %s is not a directory: %w", dir, errdefs.ErrInvalidArgument)
	h, err := pathrs.OpenatInRoot(root, dir)
	if err == nil {
		defer h.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(h.Fd()), &st); err != nil {
			return fmt.Errorf("stat working directory %s: %w", dir, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return notDir
		}
		return nil
	}
	if errors.Is(err, unix.ENOTDIR) {
		return notDir
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("open working directory %s in rootfs: %w", dir, err)
	}

	// Resolve symlinks (dangling ones included, which MkdirAllHandle refuses
	// to follow) lexically inside the rootfs. MkdirAllHandle then stays
	// inside root whatever the path: a race can only make it fail.
	resolved, err := securejoin.SecureJoin(root.Name(), dir)
	if err != nil {
		return fmt.Errorf("resolve working directory %s in rootfs: %w", dir, err)
	}
	rel, err := filepath.Rel(root.Name(), resolved)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("resolve working directory %s in rootfs: got %s: %w", dir, resolved, errdefs.ErrInternal)
	}
	target := path.Join("/", filepath.ToSlash(rel))

	// Note which components exist, so only the ones created here are chowned.
	var missing []string
	for p := target; p != "/"; p = path.Dir(p) {
		f, err := pathrs.OpenatInRoot(root, p)
		if err == nil {
			f.Close()
			break
		}
		missing = append(missing, p)
	}
	created, err := pathrs.MkdirAllHandle(root, target, 0o755)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return notDir
		}
		return fmt.Errorf("create working directory %s in rootfs: %w", dir, err)
	}
	created.Close()
	for _, p := range missing {
		f, err := pathrs.OpenatInRoot(root, p)
		if err != nil {
			return fmt.Errorf("open working directory %s in rootfs: %w", p, err)
		}
		err = unix.Fchownat(int(f.Fd()), "", int(uid), int(gid), unix.AT_EMPTY_PATH)
		f.Close()
		if err != nil {
			return fmt.Errorf("chown working directory %s: %w", p, err)
		}
	}
	return nil
}
