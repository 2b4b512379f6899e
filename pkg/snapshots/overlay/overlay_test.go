//go:build linux

package overlay_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/overlay"
	"github.com/stevedore/stevedore/pkg/snapshots/testsuite"
)

// open opens an overlay snapshotter at root, skipping t where overlayfs
// does not work (failing in CI, which must say what is missing).
func open(t *testing.T, root string, opts ...overlay.Option) *overlay.Snapshotter {
	t.Helper()
	sn, err := overlay.New(root, opts...)
	if errors.Is(err, errdefs.ErrUnavailable) && os.Getenv("CI") != "true" {
		t.Skipf("overlay snapshotter: %v", err)
	}
	if err != nil {
		t.Fatalf("overlay.New: %v", err)
	}
	return sn
}

func TestSuite(t *testing.T) {
	testsuite.Run(t, "overlay", func(t *testing.T, root string) snapshots.Snapshotter {
		return open(t, root)
	})
}

func TestRootWithSeparators(t *testing.T) {
	_, err := overlay.New(filepath.Join(t.TempDir(), "a,b"))
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("New with a ',' in root: %v, want ErrInvalidArgument", err)
	}
}

// TestLongChain stacks more layers than fit in mount(2)'s one-page option
// limit, applied top-most first, and mounts the chain.
func TestLongChain(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestLongChain mounts and needs root")
		}
		t.Skip("needs root")
	}
	// A long root makes every lowerdir long.
	root := filepath.Join(t.TempDir(), strings.Repeat("long-directory-name-", 4))
	sn := open(t, root, overlay.WithNoSync())
	defer sn.Close()
	ctx := t.Context()
	const n = 120
	name := func(i int) string { return fmt.Sprintf("sha256:%064d", i) }
	for i := n - 1; i >= 0; i-- { // children first
		parent := ""
		if i > 0 {
			parent = name(i - 1)
		}
		_, err := sn.ApplyLayer(ctx, name(i), parent, nil, func(ctx context.Context, dir string, lowers []string) error {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("layer-%03d", i)), nil, 0o644); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "top"), []byte(name(i)), 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	m, err := sn.Prepare(ctx, "ctr", name(n-1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l := len(strings.Join(m[0].Options, ",")); l <= os.Getpagesize() {
		t.Fatalf("options are %d bytes; the test wants them over a page", l)
	}
	target := t.TempDir()
	if err := snapshots.MountAll(m, target); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := snapshots.UnmountAll(target); err != nil {
			t.Error(err)
		}
	}()
	for _, f := range []string{"layer-000", fmt.Sprintf("layer-%03d", n-1)} {
		if _, err := os.Stat(filepath.Join(target, f)); err != nil {
			t.Error(err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(target, "top")); err != nil || string(b) != name(n-1) {
		t.Errorf("top = %q, %v; want the top-most layer's", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "w"), nil, 0o644); err != nil {
		t.Errorf("write through the long overlay: %v", err)
	}
}
