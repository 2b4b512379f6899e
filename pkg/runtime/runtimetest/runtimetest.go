// Package runtimetest builds what tests of task runtimes need: a check that
// this machine can run containers (root, runc, busybox) and OCI bundles
// with a busybox rootfs built in a temp dir.
package runtimetest

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Busybox is where the tests take busybox from (Debian's busybox-static).
const Busybox = "/bin/busybox"

// Applets are the busybox commands a test rootfs links in /bin.
var Applets = []string{
	"sh", "echo", "sleep", "cat", "id", "true", "false", "kill", "head", "tr",
	"dd", "printf", "ls", "env", "seq", "yes", "wc",
}

// Need checks that this machine can run containers and returns the runc
// path. Without root, runc or busybox the test is skipped, except in CI
// (CI=true), where it fails saying what is missing.
func Need(t testing.TB) string {
	t.Helper()
	missing := func(what string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and %s", what)
		}
		t.Skipf("skipping: %s", what)
	}
	if os.Geteuid() != 0 {
		missing("running containers needs root")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		missing("runc is not installed (apt-get install runc)")
	}
	if _, err := os.Stat(Busybox); err != nil {
		missing(Busybox + " is missing (apt-get install busybox-static)")
	}
	return runc
}

// BundleOpts shapes a test bundle.
type BundleOpts struct {
	// Args is the task's command line.
	Args []string
	// Env is added to PATH and HOME.
	Env []string
	// MemoryLimit, if positive, limits the task's memory (and memory plus
	// swap) to that many bytes.
	MemoryLimit int64
	// NoPIDNamespace runs the task in the host's pid namespace, so its
	// process is not a namespace init and default signal dispositions
	// apply (SIGTERM kills it).
	NoPIDNamespace bool
}

// Bundle writes an OCI bundle in a new temp dir: a busybox rootfs and a
// minimal config.json (no terminal, root user, pid/ipc/uts/mount
// namespaces, the standard /proc, /dev and /sys mounts). It returns the
// bundle's absolute path.
func Bundle(t testing.TB, o BundleOpts) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatalf("rootfs: %v", err)
		}
	}
	if err := copyFile(Busybox, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		t.Fatalf("rootfs: copy busybox (install busybox-static): %v", err)
	}
	for _, a := range Applets {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", a)); err != nil {
			t.Fatalf("rootfs: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644); err != nil {
		t.Fatalf("rootfs: %v", err)
	}
	data, err := json.MarshalIndent(Spec(o), "", "\t")
	if err != nil {
		t.Fatalf("config.json: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	return dir
}

// Spec returns the runtime spec Bundle writes.
func Spec(o BundleOpts) *specs.Spec {
	caps := []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_KILL",
		"CAP_SYS_CHROOT", "CAP_AUDIT_WRITE",
	}
	ns := []specs.LinuxNamespace{{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.MountNamespace}}
	if !o.NoPIDNamespace {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	res := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}
	if o.MemoryLimit > 0 {
		l := o.MemoryLimit
		res.Memory = &specs.LinuxMemory{Limit: &l, Swap: &l}
	}
	return &specs.Spec{
		Version: "1.0.2",
		Process: &specs.Process{
			Args: o.Args,
			Env:  append([]string{"PATH=/bin", "HOME=/"}, o.Env...),
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "task",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: ns,
			Resources:  res,
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
