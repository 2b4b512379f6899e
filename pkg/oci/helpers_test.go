package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
svc:x:1001:1001::/srv:/bin/sh
nohome:x:1002:1002:::/bin/sh
broken:x:notanumber:1:::
`

const testGroup = `root:x:0:
app:x:1000:
staff:x:50:app,svc
audio:x:29:app
svc:x:1001:
`

// newRootfs returns a rootfs dir (mode 0755) with the given files; a value
// starting with "->" makes a symlink to the rest.
func newRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// usersRootfs is a rootfs with testPasswd and testGroup.
func usersRootfs(t *testing.T) string {
	return newRootfs(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup})
}

func generate(t *testing.T, rootfs string, img ocispec.ImageConfig, opts Options) (*specs.Spec, error) {
	t.Helper()
	if img.Cmd == nil && img.Entrypoint == nil {
		img.Cmd = []string{"/bin/true"}
	}
	return Generate(context.Background(), rootfs, img, opts)
}

func mustGenerate(t *testing.T, rootfs string, img ocispec.ImageConfig, opts Options) *specs.Spec {
	t.Helper()
	s, err := generate(t, rootfs, img, opts)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return s
}

// checkErr fails unless err wraps class and contains msg (class nil: no error).
func checkErr(t *testing.T, err, class error, msg string) {
	t.Helper()
	if class == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, class) {
		t.Fatalf("error = %v, want class %v", err, class)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("error = %q, want it to contain %q", err, msg)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (CI=true: not skipping)")
	}
	t.Skip("needs root")
}

func envValue(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}
