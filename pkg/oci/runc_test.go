package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// needTool returns the path of a host tool the runc test needs; missing is a
// failure in CI (CI=true) and a skip elsewhere.
func needTool(t *testing.T, what string, find func() (string, error)) string {
	t.Helper()
	p, err := find()
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI (CI=true): %v", what, err)
	}
	t.Skipf("%s not available: %v", what, err)
	return ""
}

// TestRuncRunsGeneratedSpec runs a generated spec under the real runc: a
// busybox rootfs, a non-root user from the image's /etc/passwd, a working
// directory Generate created, env from image and options, resource limits,
// and no network but loopback.
func TestRuncRunsGeneratedSpec(t *testing.T) {
	requireRoot(t)
	runc := needTool(t, "runc", func() (string, error) { return exec.LookPath("runc") })
	busybox := needTool(t, "/bin/busybox (Debian: busybox-static)", func() (string, error) {
		_, err := os.Stat("/bin/busybox")
		return "/bin/busybox", err
	})

	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(rootfs, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	const script = `bb=/bin/busybox
echo "uid=$($bb id -u) gid=$($bb id -g) groups=$($bb id -G)"
echo "pwd=$(pwd)"
$bb touch ./written && echo "write=ok"
echo "net=$($bb ls /sys/class/net | $bb tr '\n' ' ')"
echo "host=$($bb hostname)"
echo "nofile=$(ulimit -n)"
cg=/sys/fs/cgroup
echo "mem=$($bb cat $cg/memory/memory.limit_in_bytes 2>/dev/null || $bb cat $cg/memory.max)"
echo "pids=$($bb cat $cg/pids/pids.max 2>/dev/null || $bb cat $cg/pids.max)"
$bb env | $bb sort | $bb sed 's/^/env:/'
exit 7`
	img := ocispec.ImageConfig{
		Entrypoint: []string{"/bin/busybox", "sh", "-c"},
		Cmd:        []string{"echo image cmd must be overridden"},
		Env:        []string{"FROM_IMAGE=1", "OVERRIDE=image"},
		User:       "app",
		WorkingDir: "/home/app/work",
	}
	spec, err := Generate(context.Background(), rootfs, img, Options{
		Args:        []string{script},
		Env:         []string{"OVERRIDE=user", "FROM_USER=yes"},
		Hostname:    "oci-test",
		MemoryLimit: 64 << 20,
		CPUs:        0.5,
		PidsLimit:   32,
		Labels:      map[string]string{"io.stevedore.test": "1"},
	})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	id := fmt.Sprintf("stevedore-oci-test-%d", time.Now().UnixNano())
	state := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Cleanup(func() {
		_ = exec.Command(runc, "--root", state, "delete", "--force", id).Run()
	})
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, runc, "--root", state, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 7 {
		t.Fatalf("runc run: err=%v (want exit status 7)\nstdout:\n%s\nstderr:\n%s\nconfig.json:\n%s", err, stdout.String(), stderr.String(), data)
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	for _, want := range []string{
		"uid=1000 gid=1000 groups=1000 29 50",
		"pwd=/home/app/work",
		"write=ok",
		"net=lo ",
		"host=oci-test",
		"nofile=1024",
		"mem=67108864",
		"pids=32",
		"env:FROM_IMAGE=1",
		"env:FROM_USER=yes",
		"env:HOME=/home/app",
		"env:HOSTNAME=oci-test",
		"env:OVERRIDE=user",
		"env:PATH=" + DefaultPath,
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("container output lacks %q\nstdout:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
		}
	}
	if strings.Contains(stdout.String(), "image cmd must be overridden") {
		t.Errorf("image Cmd ran:\n%s", stdout.String())
	}
	fi, err := os.Stat(filepath.Join(rootfs, "home/app/work/written"))
	if err != nil {
		t.Fatalf("file written in the working directory is not in the rootfs: %v", err)
	}
	if uid := fileUID(t, fi); uid != 1000 {
		t.Errorf("file written by the container owned by %d, want 1000", uid)
	}
}
