// Package oci generates OCI runtime specs (config.json for runc) from an image
// config and the user's run options, following Docker's and nerdctl's rules
// for entrypoint/command, environment, user, working directory and defaults
// (namespaces, mounts, capabilities, masked paths, device rules, rlimits).
//
// Everything Generate reads from or creates in the rootfs (/etc/passwd,
// /etc/group, the working directory) is resolved with the rootfs as "/":
// a symlink inside an image can never make Stevedore read or create a file on
// the host.
package oci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// Defaults applied by Generate.
const (
	// DefaultPath is the PATH set when neither the image nor the user sets one.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// DefaultHostname is the hostname used when Options.Hostname is empty.
	DefaultHostname = "stevedore"
	// CPUPeriod is the CFS period (µs) used to turn Options.CPUs into a quota.
	CPUPeriod = 100000
	// MinMemoryLimit is the smallest memory limit accepted (as Docker's 6 MiB).
	MinMemoryLimit = 6 << 20
)

// Network modes accepted in Options.Network.
const (
	// NetworkNone gives the container its own network namespace with only
	// loopback (runc brings lo up). The empty string means NetworkNone.
	NetworkNone = "none"
	// NetworkHost shares the host's network namespace and bind-mounts the
	// host's /etc/resolv.conf and /etc/hosts read-only.
	NetworkHost = "host"
)

// DefaultCapabilities is Docker's default capability set.
var DefaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// DefaultMaskedPaths and DefaultReadonlyPaths are Docker's.
var (
	DefaultMaskedPaths = []string{
		"/proc/acpi",
		"/proc/kcore",
		"/proc/keys",
		"/proc/latency_stats",
		"/proc/timer_list",
		"/proc/timer_stats",
		"/proc/sched_debug",
		"/proc/scsi",
		"/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	DefaultReadonlyPaths = []string{
		"/proc/asound",
		"/proc/bus",
		"/proc/fs",
		"/proc/irq",
		"/proc/sys",
		"/proc/sysrq-trigger",
	}
)

// Mount is a user mount. Only bind mounts are supported.
type Mount struct {
	// Type is "bind"; empty means "bind".
	Type string
	// Source is an absolute path on the host; it must exist.
	Source string
	// Destination is an absolute path inside the container.
	Destination string
	// ReadOnly mounts the source read-only.
	ReadOnly bool
}

// Options are the user's run options, applied over the image config.
// The zero value is valid and gives Docker's defaults.
type Options struct {
	// Args overrides the image's Cmd when non-empty.
	Args []string
	// Entrypoint replaces the image's Entrypoint when EntrypointSet is true.
	// An empty Entrypoint (or [""]) clears it. Setting the entrypoint also
	// drops the image's Cmd: only Args follow it (Docker's rule).
	Entrypoint    []string
	EntrypointSet bool
	// Env entries are "KEY=VAL", overriding the image's value of KEY, or a bare
	// "KEY", which removes KEY from the environment. Docker's `-e KEY`
	// (take the value from the client's environment) must be resolved by the
	// client before calling Generate; ParseEnvFile does so for env files.
	Env []string
	// User is "", "name", "uid", "name:group", "uid:gid", "name:gid" or
	// "uid:group" (":group" is root with that group); "" means the image's
	// User, else root.
	User string
	// WorkingDir overrides the image's WorkingDir; it must be absolute.
	WorkingDir string
	// Hostname defaults to DefaultHostname.
	Hostname string
	// Network is NetworkNone ("" too) or NetworkHost.
	Network string
	// Mounts are appended after the default mounts; one with the same
	// destination as a default mount (e.g. /dev/shm) replaces it.
	Mounts []Mount
	// ReadOnlyRootfs makes the root filesystem read-only.
	ReadOnlyRootfs bool
	// MemoryLimit in bytes; 0 means none. Swap is limited to the same value,
	// so the container cannot swap and an OOM is an OOM.
	MemoryLimit int64
	// CPUs is the number of CPUs' worth of time (quota/period); 0 means none.
	CPUs float64
	// PidsLimit caps the number of processes; 0 or negative means none.
	PidsLimit int64
	// Labels become the spec's annotations.
	Labels map[string]string
	// Terminal allocates a pseudo-terminal (and sets TERM=xterm if unset).
	Terminal bool
	// NoNewPrivileges sets the no_new_privs bit; nil means true.
	NoNewPrivileges *bool
	// Rlimits; nil means Docker's default RLIMIT_NOFILE 1024:1024, an empty
	// non-nil slice means none.
	Rlimits []specs.POSIXRlimit
	// CgroupsPath is passed to the runtime as is ("" lets runc choose).
	CgroupsPath string
}

// Generate returns the runtime spec for running the image config img over the
// unpacked rootfs with opts.
//
// It reads /etc/passwd and /etc/group from the rootfs and creates the working
// directory in it if missing (owned by the container user), all resolved
// inside the rootfs. Errors wrap errdefs classes: ErrInvalidArgument for bad
// options or image config ("no command specified", a relative or non-directory
// working directory), ErrNotFound for an unknown user or group, a missing
// bind source or a missing rootfs.
func Generate(ctx context.Context, rootfs string, img ocispec.ImageConfig, opts Options) (*specs.Spec, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	args, err := processArgs(img, opts)
	if err != nil {
		return nil, err
	}
	hostname := opts.Hostname
	if hostname == "" {
		hostname = DefaultHostname
	}
	if len(hostname) > 64 || strings.ContainsAny(hostname, "\x00/ \t\n") {
		return nil, fmt.Errorf("invalid hostname %q: %w", hostname, errdefs.ErrInvalidArgument)
	}
	network := opts.Network
	if network == "" {
		network = NetworkNone
	}
	if network != NetworkNone && network != NetworkHost {
		return nil, fmt.Errorf("unsupported network mode %q (want %q or %q): %w", opts.Network, NetworkNone, NetworkHost, errdefs.ErrInvalidArgument)
	}
	cwd := opts.WorkingDir
	if cwd == "" {
		cwd = img.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %s is not an absolute path: %w", cwd, errdefs.ErrInvalidArgument)
	}
	cwd = path.Clean(cwd)
	resources, err := resources(opts)
	if err != nil {
		return nil, err
	}
	rlimits, err := rlimits(opts.Rlimits)
	if err != nil {
		return nil, err
	}
	mounts, err := mounts(network, opts.Mounts)
	if err != nil {
		return nil, err
	}

	rootfs, err = filepath.Abs(rootfs)
	if err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", rootfs, errdefs.ErrInvalidArgument)
	}
	root, err := os.OpenFile(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("rootfs %s does not exist: %w", rootfs, errdefs.ErrNotFound)
		case errors.Is(err, unix.ENOTDIR):
			return nil, fmt.Errorf("rootfs %s is not a directory: %w", rootfs, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("open rootfs: %w", err)
	}
	defer root.Close()

	userSpec := opts.User
	if userSpec == "" {
		userSpec = img.User
	}
	u, err := resolveUser(root, userSpec)
	if err != nil {
		return nil, err
	}
	if err := ensureWorkdir(root, cwd, u.UID, u.GID); err != nil {
		return nil, err
	}
	env, err := environment(img.Env, opts.Env, hostname, u.Home, opts.Terminal)
	if err != nil {
		return nil, err
	}

	namespaces := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
	}
	if network != NetworkHost {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})

	nnp := opts.NoNewPrivileges == nil || *opts.NoNewPrivileges
	var annotations map[string]string
	if len(opts.Labels) > 0 {
		annotations = maps.Clone(opts.Labels)
	}
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal: opts.Terminal,
			User: specs.User{
				UID:            u.UID,
				GID:            u.GID,
				AdditionalGids: u.AdditionalGids,
			},
			Args: args,
			Env:  env,
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  slices.Clone(DefaultCapabilities),
				Effective: slices.Clone(DefaultCapabilities),
				Permitted: slices.Clone(DefaultCapabilities),
			},
			Rlimits:         rlimits,
			NoNewPrivileges: nnp,
		},
		Root:        &specs.Root{Path: rootfs, Readonly: opts.ReadOnlyRootfs},
		Hostname:    hostname,
		Mounts:      mounts,
		Annotations: annotations,
		Linux: &specs.Linux{
			Resources:     resources,
			CgroupsPath:   opts.CgroupsPath,
			Namespaces:    namespaces,
			MaskedPaths:   slices.Clone(DefaultMaskedPaths),
			ReadonlyPaths: slices.Clone(DefaultReadonlyPaths),
		},
	}, nil
}

// processArgs applies Docker's entrypoint/command rules.
func processArgs(img ocispec.ImageConfig, opts Options) ([]string, error) {
	var entrypoint, cmd []string
	if opts.EntrypointSet {
		entrypoint = opts.Entrypoint
		if len(entrypoint) == 1 && entrypoint[0] == "" {
			entrypoint = nil // --entrypoint ""
		}
		cmd = opts.Args
	} else {
		entrypoint = img.Entrypoint
		cmd = img.Cmd
		if len(opts.Args) > 0 {
			cmd = opts.Args
		}
	}
	args := append(slices.Clone(entrypoint), cmd...)
	if len(args) == 0 || args[0] == "" {
		return nil, fmt.Errorf("no command specified: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

// environment merges the image's env, the defaults and the user's env; keys
// keep the position of their first appearance.
func environment(imageEnv, userEnv []string, hostname, home string, terminal bool) ([]string, error) {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	setDefault := func(k, v string) {
		if _, ok := vals[k]; !ok {
			set(k, v)
		}
	}
	for _, kv := range imageEnv {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" || strings.ContainsRune(kv, 0) {
			return nil, fmt.Errorf("image config has invalid env entry %q: %w", kv, errdefs.ErrInvalidArgument)
		}
		if !ok {
			continue // not an assignment; nothing to pass on
		}
		set(k, v)
	}
	setDefault("PATH", DefaultPath)
	setDefault("HOSTNAME", hostname)
	if terminal {
		setDefault("TERM", "xterm")
	}
	for _, kv := range userEnv {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" || strings.ContainsRune(kv, 0) {
			return nil, fmt.Errorf("invalid env entry %q: %w", kv, errdefs.ErrInvalidArgument)
		}
		if !ok {
			delete(vals, k) // bare KEY unsets
			continue
		}
		set(k, v)
	}
	setDefault("HOME", home)
	env := make([]string, 0, len(vals))
	for _, k := range keys {
		if v, ok := vals[k]; ok {
			env = append(env, k+"="+v)
			delete(vals, k) // a key unset and set again appears twice in keys
		}
	}
	return env, nil
}

func resources(opts Options) (*specs.LinuxResources, error) {
	r := &specs.LinuxResources{Devices: defaultDeviceRules()}
	switch {
	case opts.MemoryLimit < 0:
		return nil, fmt.Errorf("memory limit %d is negative: %w", opts.MemoryLimit, errdefs.ErrInvalidArgument)
	case opts.MemoryLimit > 0 && opts.MemoryLimit < MinMemoryLimit:
		return nil, fmt.Errorf("memory limit %d is below the minimum of 6MiB: %w", opts.MemoryLimit, errdefs.ErrInvalidArgument)
	case opts.MemoryLimit > 0:
		limit, swap := opts.MemoryLimit, opts.MemoryLimit
		r.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap}
	}
	if opts.CPUs < 0 || math.IsNaN(opts.CPUs) || math.IsInf(opts.CPUs, 0) {
		return nil, fmt.Errorf("cpus %v must be a positive number: %w", opts.CPUs, errdefs.ErrInvalidArgument)
	}
	if opts.CPUs > 0 {
		q := opts.CPUs * CPUPeriod
		if q < 1000 || q > math.MaxInt64/2 {
			return nil, fmt.Errorf("cpus %v out of range (at least 0.01): %w", opts.CPUs, errdefs.ErrInvalidArgument)
		}
		quota, period := int64(math.Round(q)), uint64(CPUPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if opts.PidsLimit > 0 {
		limit := opts.PidsLimit
		r.Pids = &specs.LinuxPids{Limit: &limit}
	}
	return r, nil
}

func defaultDeviceRules() []specs.LinuxDeviceCgroup {
	i := func(v int64) *int64 { return &v }
	allow := func(typ string, major, minor *int64, access string) specs.LinuxDeviceCgroup {
		return specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: major, Minor: minor, Access: access}
	}
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		allow("c", nil, nil, "m"), // mknod of any device (CAP_MKNOD is granted), as Docker
		allow("b", nil, nil, "m"),
		allow("c", i(1), i(3), "rwm"),  // /dev/null
		allow("c", i(1), i(5), "rwm"),  // /dev/zero
		allow("c", i(1), i(7), "rwm"),  // /dev/full
		allow("c", i(1), i(8), "rwm"),  // /dev/random
		allow("c", i(1), i(9), "rwm"),  // /dev/urandom
		allow("c", i(5), i(0), "rwm"),  // /dev/tty
		allow("c", i(5), i(2), "rwm"),  // /dev/ptmx
		allow("c", i(136), nil, "rwm"), // /dev/pts/*
	}
}

func rlimits(in []specs.POSIXRlimit) ([]specs.POSIXRlimit, error) {
	if in == nil {
		return []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}, nil
	}
	seen := map[string]bool{}
	for _, r := range in {
		if !strings.HasPrefix(r.Type, "RLIMIT_") || seen[r.Type] {
			return nil, fmt.Errorf("invalid or duplicate rlimit %q: %w", r.Type, errdefs.ErrInvalidArgument)
		}
		if r.Soft > r.Hard {
			return nil, fmt.Errorf("rlimit %s: soft limit %d exceeds hard limit %d: %w", r.Type, r.Soft, r.Hard, errdefs.ErrInvalidArgument)
		}
		seen[r.Type] = true
	}
	return slices.Clone(in), nil
}

func defaultMounts(network string) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	if network == NetworkHost {
		for _, f := range []string{"/etc/resolv.conf", "/etc/hosts"} {
			if _, err := os.Stat(f); err != nil {
				continue // a host without the file gives the container none either
			}
			m = append(m, specs.Mount{Destination: f, Type: "bind", Source: f, Options: []string{"rbind", "ro"}})
		}
	}
	return m
}

// mounts returns the default mounts followed by the user's; a user mount
// replaces a default mount with the same destination.
func mounts(network string, user []Mount) ([]specs.Mount, error) {
	out := defaultMounts(network)
	var extra []specs.Mount
	for _, m := range user {
		sm, err := bindMount(m)
		if err != nil {
			return nil, err
		}
		out = slices.DeleteFunc(out, func(d specs.Mount) bool { return d.Destination == sm.Destination })
		extra = append(extra, sm)
	}
	return append(out, extra...), nil
}

func bindMount(m Mount) (specs.Mount, error) {
	if m.Type != "" && m.Type != "bind" {
		return specs.Mount{}, fmt.Errorf("mount type %q is not supported (only bind): %w", m.Type, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(m.Source) {
		return specs.Mount{}, fmt.Errorf("bind source %q is not an absolute path: %w", m.Source, errdefs.ErrInvalidArgument)
	}
	if !path.IsAbs(m.Destination) || path.Clean(m.Destination) == "/" {
		return specs.Mount{}, fmt.Errorf("bind destination %q must be an absolute path other than /: %w", m.Destination, errdefs.ErrInvalidArgument)
	}
	src := filepath.Clean(m.Source)
	if _, err := os.Stat(src); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return specs.Mount{}, fmt.Errorf("bind source %s does not exist: %w", src, errdefs.ErrNotFound)
		}
		return specs.Mount{}, fmt.Errorf("bind source %s: %w", src, err)
	}
	mode := "rw"
	if m.ReadOnly {
		mode = "ro"
	}
	return specs.Mount{
		Destination: path.Clean(m.Destination),
		Type:        "bind",
		Source:      src,
		Options:     []string{"rbind", mode},
	}, nil
}
