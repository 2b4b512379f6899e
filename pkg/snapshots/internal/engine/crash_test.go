//go:build linux

package engine_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/internal/engine"
	"github.com/stevedore/stevedore/pkg/snapshots/native"
	"github.com/stevedore/stevedore/pkg/snapshots/overlay"
)

// Environment of the crashing child process.
const (
	envRoot  = "SNAPSHOTS_CRASH_ROOT"
	envImpl  = "SNAPSHOTS_CRASH_IMPL"
	envPoint = "SNAPSHOTS_CRASH_POINT"
)

func open(t *testing.T, impl, root string) snapshots.Snapshotter {
	t.Helper()
	var (
		sn  snapshots.Snapshotter
		err error
	)
	if impl == "overlay" {
		sn, err = overlay.New(root)
	} else {
		sn, err = native.New(root)
	}
	if errors.Is(err, errdefs.ErrUnavailable) && os.Getenv("CI") != "true" {
		t.Skipf("%s: %v", impl, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func fill(files ...string) snapshots.FillFunc {
	return func(ctx context.Context, dir string, lowers []string) error {
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestCrashChild is the process TestCrash kills: it applies "layer" and
// removes "victim", and SIGKILLs itself at the crash point.
func TestCrashChild(t *testing.T) {
	root := os.Getenv(envRoot)
	if root == "" {
		t.Skip("run by TestCrash")
	}
	point := os.Getenv(envPoint)
	engine.TestHook = func(p string) {
		if p == point {
			_ = unix.Kill(os.Getpid(), unix.SIGKILL)
			select {}
		}
	}
	sn := open(t, os.Getenv(envImpl), root)
	ctx := context.Background()
	if _, err := sn.ApplyLayer(ctx, "layer", "base", nil, fill("l1", "l2", "l3")); err != nil {
		t.Fatal(err)
	}
	if err := sn.Remove(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	t.Fatal("not killed at " + point)
}

// TestCrash kills a process at each point of the crash-safety protocol and
// checks that reopening leaves metadata and directories in agreement, with
// the interrupted snapshot either wholly there or wholly absent, and that
// repeating the work then succeeds (invariants 2 and 3).
func TestCrash(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestCrash mounts and needs root")
		}
		t.Skip("needs root")
	}
	points := []struct {
		point       string
		layerExists bool
		victimGone  bool
	}{
		{"apply-filled", false, false},
		{"renamed", false, false},
		{"recorded", true, false},
		{"remove-unrecorded", true, true},
	}
	for _, impl := range []string{"overlay", "native"} {
		for _, p := range points {
			t.Run(impl+"/"+p.point, func(t *testing.T) {
				t.Parallel()
				root := t.TempDir()
				ctx := t.Context()
				sn := open(t, impl, root)
				for _, name := range []string{"base", "victim"} {
					if _, err := sn.ApplyLayer(ctx, name, "", nil, fill(name)); err != nil {
						t.Fatal(err)
					}
				}
				if err := sn.Close(); err != nil {
					t.Fatal(err)
				}

				cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), envRoot+"="+root, envImpl+"="+impl, envPoint+"="+p.point)
				out, err := cmd.CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("child was not killed: %v\n%s", err, out)
				}

				sn = open(t, impl, root)
				defer sn.Close()
				keys := map[string]bool{}
				if err := sn.Walk(ctx, func(i snapshots.Info) error { keys[i.Key] = true; return nil }); err != nil {
					t.Fatal(err)
				}
				dirs, _ := os.ReadDir(filepath.Join(root, "snapshots"))
				tmps, _ := os.ReadDir(filepath.Join(root, "tmp"))
				if len(dirs) != len(keys) || len(tmps) != 0 {
					t.Errorf("after reopen: %d records %v, %d snapshot dirs, %d tmp entries", len(keys), keys, len(dirs), len(tmps))
				}
				if keys["layer"] != p.layerExists || keys["victim"] == p.victimGone || !keys["base"] {
					t.Errorf("after a crash at %s: snapshots %v", p.point, keys)
				}
				// Redo the work: idempotent, and the result is whole.
				_, err = sn.ApplyLayer(ctx, "layer", "base", nil, fill("l1", "l2", "l3"))
				if err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
					t.Fatal(err)
				}
				if err := sn.Remove(ctx, "victim"); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					t.Fatal(err)
				}
				m, err := sn.Mounts(ctx, "layer")
				if err != nil {
					t.Fatal(err)
				}
				target := t.TempDir()
				if err := snapshots.MountAll(m, target); err != nil {
					t.Fatal(err)
				}
				defer snapshots.UnmountAll(target)
				for _, f := range []string{"base", "l1", "l2", "l3"} {
					if b, err := os.ReadFile(filepath.Join(target, f)); err != nil || string(b) != f {
						t.Errorf("%s = %q, %v", f, b, err)
					}
				}
			})
		}
	}
}
