package remotes_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/registry"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/remotes"
)

// credentials isolates the docker keychain from the machine's: a fresh HOME
// and DOCKER_CONFIG holding a config.json with the given host → user:password
// entries (none when auths is nil).
func credentials(t *testing.T, auths map[string][2]string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, ".config"))
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("REGISTRY_AUTH_FILE", "")
	cfgDir := filepath.Join(dir, "docker")
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfgDir)
	if auths == nil {
		return
	}
	type entry struct {
		Auth string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]entry `json:"auths"`
	}{Auths: map[string]entry{}}
	for host, up := range auths {
		cfg.Auths[host] = entry{Auth: base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newRemote(t *testing.T, opts ...remotes.Option) *remotes.Remote {
	t.Helper()
	r, err := remotes.New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func parse(t *testing.T, s string) remotes.Reference {
	t.Helper()
	ref, err := remotes.ParseReference(s)
	if err != nil {
		t.Fatalf("ParseReference(%q): %v", s, err)
	}
	return ref
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustLayer(t *testing.T, c testimage.Compression, entries ...testimage.Entry) *testimage.Layer {
	t.Helper()
	l, err := testimage.NewLayer(c, entries...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func fetchAll(t *testing.T, r *remotes.Remote, ref remotes.Reference, d ocispec.Descriptor) []byte {
	t.Helper()
	rc, start, err := r.Fetch(ctxT(t), ref, d, 0, false)
	if err != nil {
		t.Fatalf("Fetch %s: %v", d.Digest, err)
	}
	defer rc.Close()
	if start != 0 {
		t.Fatalf("Fetch %s from 0: start %d", d.Digest, start)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", d.Digest, err)
	}
	if got := digest.FromBytes(b); got != d.Digest || int64(len(b)) != d.Size {
		t.Fatalf("fetched %s: got %s (%d bytes), want %d bytes", d.Digest, got, len(b), d.Size)
	}
	return b
}

// pull walks ref the way the fetcher does and returns every blob fetched.
func pull(t *testing.T, r *remotes.Remote, ref remotes.Reference, p images.Platform) map[digest.Digest][]byte {
	t.Helper()
	root, err := r.Resolve(ctxT(t), ref, false)
	if err != nil {
		t.Fatalf("Resolve %s: %v", ref, err)
	}
	got := map[digest.Digest][]byte{}
	queue := []ocispec.Descriptor{root}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		b := fetchAll(t, r, ref, d)
		got[d.Digest] = b
		if images.IsIndex(d.MediaType) || images.IsManifest(d.MediaType) {
			children, err := images.Children(b, d, p)
			if err != nil {
				t.Fatalf("Children %s: %v", d.Digest, err)
			}
			for _, c := range children {
				queue = append(queue, c.Descriptor)
			}
		}
	}
	return got
}

func assertBlobs(t *testing.T, got map[digest.Digest][]byte, want []ocispec.Descriptor) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("fetched %d blobs, want %d", len(got), len(want))
	}
	for _, d := range want {
		if _, ok := got[d.Digest]; !ok {
			t.Errorf("blob %s (%s) not fetched", d.Digest, d.MediaType)
		}
	}
}

func TestParseReference(t *testing.T) {
	const dg = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	valid := []struct {
		name, in, want, registry, repository, tag string
		digest                                    digest.Digest
	}{
		{"short name", "busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", ""},
		{"short with tag", "busybox:1.36", "docker.io/library/busybox:1.36", "docker.io", "library/busybox", "1.36", ""},
		{"user repo", "user/app", "docker.io/user/app:latest", "docker.io", "user/app", "latest", ""},
		{"docker.io explicit", "docker.io/library/alpine:3", "docker.io/library/alpine:3", "docker.io", "library/alpine", "3", ""},
		{"index.docker.io", "index.docker.io/library/alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", ""},
		{"registry with port", "127.0.0.1:5000/app:1.0", "127.0.0.1:5000/app:1.0", "127.0.0.1:5000", "app", "1.0", ""},
		{"localhost", "localhost:5000/a/b/c", "localhost:5000/a/b/c:latest", "localhost:5000", "a/b/c", "latest", ""},
		{"digest only", "ghcr.io/x/y@" + dg, "ghcr.io/x/y@" + dg, "ghcr.io", "x/y", "", dg},
		{"tag and digest", "app:1.0@" + dg, "docker.io/library/app:1.0@" + dg, "docker.io", "library/app", "1.0", dg},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := remotes.ParseReference(tc.in)
			if err != nil {
				t.Fatalf("ParseReference(%q): %v", tc.in, err)
			}
			if ref.String() != tc.want || ref.Registry() != tc.registry || ref.Repository() != tc.repository ||
				ref.Tag() != tc.tag || ref.Digest() != tc.digest {
				t.Errorf("ParseReference(%q) = %q (registry %q repo %q tag %q digest %q), want %q",
					tc.in, ref, ref.Registry(), ref.Repository(), ref.Tag(), ref.Digest(), tc.want)
			}
		})
	}
	invalid := []struct{ name, in, mention string }{
		{"empty", "", "empty"},
		{"scheme", "https://registry.example/app:1", "scheme"},
		{"upper case", "Registry.example/App:1", "App"},
		{"space", "app :1", "white space"},
		{"empty tag", "app:", "empty tag"},
		{"bad tag", "app:-bad!", "tag"},
		{"bad digest", "app@sha256:xyz", "digest"},
		{"short digest", "app@sha256:0123", "digest"},
		{"empty repo", "@" + dg, "repository"},
		{"double slash", "registry.example//app", "app"},
	}
	for _, tc := range invalid {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			_, err := remotes.ParseReference(tc.in)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("ParseReference(%q) error = %v, want ErrInvalidArgument", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
				t.Errorf("error %q should quote the input and mention %q", err, tc.mention)
			}
		})
	}
}

func TestNewValidatesOptions(t *testing.T) {
	for name, opt := range map[string]remotes.Option{
		"max conns 0":         remotes.WithMaxConnsPerRegistry(0),
		"dial timeout":        remotes.WithDialTimeout(0),
		"tls timeout":         remotes.WithTLSHandshakeTimeout(-time.Second),
		"header timeout":      remotes.WithResponseHeaderTimeout(0),
		"manifest size":       remotes.WithMaxManifestSize(0),
		"config size":         remotes.WithMaxConfigSize(-1),
		"index depth":         remotes.WithMaxIndexDepth(0),
		"nil keychain":        remotes.WithKeychain(nil),
		"empty user agent":    remotes.WithUserAgent(" "),
		"user agent newlines": remotes.WithUserAgent("a\r\nX-Evil: 1"),
		"nil tls":             remotes.WithTLSConfig(nil),
	} {
		if _, err := remotes.New(opt); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: New error = %v, want ErrInvalidArgument", name, err)
		}
	}
	r := newRemote(t, remotes.WithMaxManifestSize(1234), remotes.WithMaxIndexDepth(2))
	if l := r.Limits(); l.MaxManifestSize != 1234 || l.MaxIndexDepth != 2 || l.MaxConfigSize != remotes.DefaultMaxConfigSize {
		t.Errorf("Limits() = %+v", l)
	}
}

func TestResolveAndFetchImages(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	r := newRemote(t)
	files := []testimage.Entry{
		testimage.Dir("bin", 0o755),
		testimage.File("bin/hello", []byte("#!/bin/sh\necho hello\n"), 0o755),
		testimage.Symlink("bin/hi", "hello"),
		testimage.Hardlink("bin/hello2", "bin/hello"),
	}
	big, err := testimage.RandomLayer(256<<10, 7)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		format testimage.Format
		layers []*testimage.Layer
	}{
		{"oci single gzip layer", testimage.OCI, []*testimage.Layer{mustLayer(t, testimage.Gzip, files...)}},
		{"oci multi layer", testimage.OCI, []*testimage.Layer{
			mustLayer(t, testimage.Gzip, files...),
			mustLayer(t, testimage.Uncompressed, testimage.File("etc/motd", []byte("hi\n"), 0o644)),
			big,
		}},
		{"oci zstd layers", testimage.OCI, []*testimage.Layer{
			mustLayer(t, testimage.Zstd, files...),
			mustLayer(t, testimage.Zstd, testimage.File("a", []byte("a"), 0o600)),
		}},
		{"docker multi layer", testimage.Docker, []*testimage.Layer{
			mustLayer(t, testimage.Gzip, files...),
			mustLayer(t, testimage.Gzip, testimage.File("etc/motd", []byte("docker\n"), 0o644)),
		}},
		{"docker zstd", testimage.Docker, []*testimage.Layer{mustLayer(t, testimage.Zstd, files...)}},
		{"no layers", testimage.OCI, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := &testimage.Image{Format: tc.format, Layers: tc.layers}
			tag := fmt.Sprintf("app/%d:v1", i)
			want, err := testimage.Push(ctxT(t), reg.Host(), tag, img)
			if err != nil {
				t.Fatal(err)
			}
			ref := parse(t, reg.Host()+"/"+tag)
			got, err := r.Resolve(ctxT(t), ref, false)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Digest != want.Digest || got.Size != want.Size || got.MediaType != want.MediaType {
				t.Fatalf("Resolve = %s %d %s, want %s %d %s", got.Digest, got.Size, got.MediaType, want.Digest, want.Size, want.MediaType)
			}
			blobs := pull(t, r, ref, images.Platform{OS: "linux", Architecture: "amd64"})
			wantBlobs, err := img.Blobs()
			if err != nil {
				t.Fatal(err)
			}
			assertBlobs(t, blobs, wantBlobs)
			for _, l := range tc.layers {
				if !bytes.Equal(blobs[l.Digest], l.Blob) {
					t.Errorf("layer %s bytes differ", l.Digest)
				}
			}
			b, _ := img.Build()
			_, diffIDs, err := images.ParseConfig(blobs[b.Config.Digest])
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if len(diffIDs) != len(tc.layers) {
				t.Fatalf("config lists %d diffIDs, want %d", len(diffIDs), len(tc.layers))
			}
			for j, l := range tc.layers {
				if diffIDs[j] != l.DiffID {
					t.Errorf("diffID %d = %s, want %s", j, diffIDs[j], l.DiffID)
				}
			}

			// By digest, and by tag and digest.
			for _, s := range []string{reg.Host() + "/app/" + fmt.Sprint(i) + "@" + want.Digest.String(), ref.String() + "@" + want.Digest.String()} {
				got, err := r.Resolve(ctxT(t), parse(t, s), false)
				if err != nil || got.Digest != want.Digest {
					t.Errorf("Resolve(%s) = %v, %v", s, got.Digest, err)
				}
			}
		})
	}
}

func TestResolveMultiPlatformIndex(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	r := newRemote(t)
	for _, f := range []testimage.Format{testimage.OCI, testimage.Docker} {
		idx, err := testimage.MultiPlatform(f, testimage.Gzip)
		if err != nil {
			t.Fatal(err)
		}
		bi, err := idx.Build()
		if err != nil {
			t.Fatal(err)
		}
		tag := fmt.Sprintf("multi:%d", f)
		want, err := testimage.PushIndex(ctxT(t), reg.Host(), tag, idx)
		if err != nil {
			t.Fatal(err)
		}
		ref := parse(t, reg.Host()+"/"+tag)
		root, err := r.Resolve(ctxT(t), ref, false)
		if err != nil {
			t.Fatal(err)
		}
		if root.Digest != want.Digest || !images.IsIndex(root.MediaType) {
			t.Fatalf("Resolve = %+v, want index %s", root, want.Digest)
		}
		for i, p := range []string{"linux/amd64", "linux/arm64", "linux/arm/v7"} {
			plat, err := images.ParsePlatform(p)
			if err != nil {
				t.Fatal(err)
			}
			got := pull(t, r, ref, plat)
			img := bi.Images[i]
			wantBlobs := append([]ocispec.Descriptor{bi.Index}, img.Blobs()...)
			assertBlobs(t, got, wantBlobs)
			if !bytes.Contains(got[img.Layers[1].Digest], []byte(p)) {
				// The platform layer is compressed; check its identity instead.
				if _, ok := got[img.Layers[1].Digest]; !ok {
					t.Errorf("%s: platform layer not fetched", p)
				}
			}
		}
		// arm/v6 cannot run any of them.
		idxBytes := fetchAll(t, r, ref, root)
		_, err = images.Children(idxBytes, root, images.Platform{OS: "linux", Architecture: "arm", Variant: "v6"})
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/arm64") {
			t.Errorf("Children for linux/arm/v6: %v, want ErrNotFound listing the platforms", err)
		}
	}
}

func TestFetchRange(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	r := newRemote(t)
	layer, err := testimage.RandomLayer(1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testimage.Push(ctxT(t), reg.Host(), "big:1", &testimage.Image{Layers: []*testimage.Layer{layer}}); err != nil {
		t.Fatal(err)
	}
	ref := parse(t, reg.Host()+"/big:1")
	desc := layer.Descriptor(testimage.OCI)
	const offset = 300_000

	t.Run("206 resumes", func(t *testing.T) {
		reg.ResetCounters()
		rc, start, err := r.Fetch(ctxT(t), ref, desc, offset, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if start != offset || !bytes.Equal(b, layer.Blob[offset:]) {
			t.Fatalf("start %d, %d bytes; want start %d and the rest of the blob", start, len(b), offset)
		}
		if n := reg.BytesServed(layer.Digest); n != desc.Size-offset {
			t.Errorf("registry served %d bytes, want %d", n, desc.Size-offset)
		}
		reqs := reg.Requests()
		last := reqs[len(reqs)-1]
		if last.Range != fmt.Sprintf("bytes=%d-", offset) || last.Status != http.StatusPartialContent {
			t.Errorf("last request %+v, want a 206 for bytes=%d-", last, offset)
		}
	})
	t.Run("200 when range is ignored", func(t *testing.T) {
		reg.SetIgnoreRange(true)
		defer reg.SetIgnoreRange(false)
		rc, start, err := r.Fetch(ctxT(t), ref, desc, offset, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if start != 0 || !bytes.Equal(b, layer.Blob) {
			t.Fatalf("start %d, %d bytes; want the whole blob from 0", start, len(b))
		}
	})
	t.Run("offset at end", func(t *testing.T) {
		reg.ResetCounters()
		rc, start, err := r.Fetch(ctxT(t), ref, desc, desc.Size, false)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if start != desc.Size || len(b) != 0 || len(reg.Requests()) != 0 {
			t.Errorf("start %d, %d bytes, %d requests; want nothing fetched", start, len(b), len(reg.Requests()))
		}
	})
	t.Run("bad offset", func(t *testing.T) {
		if _, _, err := r.Fetch(ctxT(t), ref, desc, desc.Size+1, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("offset past the end: %v, want ErrInvalidArgument", err)
		}
		if _, _, err := r.Fetch(ctxT(t), ref, desc, -1, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("negative offset: %v, want ErrInvalidArgument", err)
		}
		bad := desc
		bad.Digest = "sha256:nothex"
		if _, _, err := r.Fetch(ctxT(t), ref, bad, 0, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("bad digest: %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("size mismatch", func(t *testing.T) {
		wrong := desc
		wrong.Size += 10
		_, _, err := r.Fetch(ctxT(t), ref, wrong, 0, false)
		if !errors.Is(err, errdefs.ErrDataLoss) {
			t.Errorf("Fetch with a wrong size: %v, want ErrDataLoss", err)
		}
	})
}

func TestAuthBasic(t *testing.T) {
	const user, pass = "alice", "s3cret-Pa55"
	reg := registry.Start(t, registry.WithBasicAuth(user, pass))
	img := &testimage.Image{Layers: []*testimage.Layer{mustLayer(t, testimage.Gzip, testimage.File("f", []byte("x"), 0o644))}}
	want, err := testimage.Push(ctxT(t), reg.Host(), "private:1", img, testimage.WithAuth(user, pass))
	if err != nil {
		t.Fatal(err)
	}
	ref := parse(t, reg.Host()+"/private:1")

	t.Run("no credentials", func(t *testing.T) {
		credentials(t, nil)
		_, err := newRemote(t).Resolve(ctxT(t), ref, false)
		assertStatus(t, err, http.StatusUnauthorized, errdefs.ErrUnauthenticated)
		if !strings.Contains(err.Error(), "no credentials") || !strings.Contains(err.Error(), reg.Host()) {
			t.Errorf("message %q should say no credentials are configured for %s", err, reg.Host())
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		credentials(t, map[string][2]string{reg.Host(): {user, "wrong-password"}})
		_, err := newRemote(t).Resolve(ctxT(t), ref, false)
		assertStatus(t, err, http.StatusUnauthorized, errdefs.ErrUnauthenticated)
		if !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "wrong-password") {
			t.Errorf("message %q should say the credentials were refused, without them", err)
		}
	})
	t.Run("docker config credentials", func(t *testing.T) {
		credentials(t, map[string][2]string{reg.Host(): {user, pass}})
		r := newRemote(t)
		got, err := r.Resolve(ctxT(t), ref, false)
		if err != nil || got.Digest != want.Digest {
			t.Fatalf("Resolve = %v, %v", got.Digest, err)
		}
		blobs := pull(t, r, ref, images.DefaultPlatform())
		wantBlobs, _ := img.Blobs()
		assertBlobs(t, blobs, wantBlobs)
	})
	t.Run("credentials not forwarded on redirect", func(t *testing.T) {
		reg2 := registry.Start(t, registry.WithBasicAuth(user, pass), registry.WithBlobRedirect())
		credentials(t, map[string][2]string{reg2.Host(): {user, pass}})
		if _, err := testimage.Push(ctxT(t), reg2.Host(), "private:1", img, testimage.WithAuth(user, pass)); err != nil {
			t.Fatal(err)
		}
		reg2.ResetCounters()
		r := newRemote(t)
		ref2 := parse(t, reg2.Host()+"/private:1")
		layer := img.Layers[0]
		rc, start, err := r.Fetch(ctxT(t), ref2, layer.Descriptor(testimage.OCI), 5, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || start != 5 || !bytes.Equal(b, layer.Blob[5:]) {
			t.Fatalf("redirected ranged fetch: start %d, %d bytes, %v", start, len(b), err)
		}
		var sawRegistry, sawStorage bool
		for _, q := range reg2.Requests() {
			switch {
			case q.Server == "registry" && strings.Contains(q.Path, "/blobs/"):
				sawRegistry = true
				if !q.Authorization || q.Status != http.StatusTemporaryRedirect {
					t.Errorf("registry blob request %+v: want authorized 307", q)
				}
			case q.Server == "storage":
				sawStorage = true
				if q.Authorization {
					t.Errorf("credentials were sent to the storage host: %+v", q)
				}
				if q.Status != http.StatusPartialContent {
					t.Errorf("storage request %+v: want 206", q)
				}
			}
		}
		if !sawRegistry || !sawStorage {
			t.Errorf("requests %+v: want one to the registry and one to storage", reg2.Requests())
		}
	})
}

func TestAuthBearer(t *testing.T) {
	img := &testimage.Image{Layers: []*testimage.Layer{mustLayer(t, testimage.Gzip, testimage.File("f", []byte("y"), 0o644))}}
	wantBlobs, _ := img.Blobs()

	t.Run("anonymous token", func(t *testing.T) {
		credentials(t, nil)
		reg := registry.Start(t, registry.WithBearerAuth("", ""))
		if _, err := testimage.Push(ctxT(t), reg.Host(), "pub:1", img); err != nil {
			t.Fatal(err)
		}
		reg.ResetCounters()
		r := newRemote(t)
		blobs := pull(t, r, parse(t, reg.Host()+"/pub:1"), images.DefaultPlatform())
		assertBlobs(t, blobs, wantBlobs)
		var tokens, authorized int
		for _, q := range reg.Requests() {
			if q.Path == "/token" {
				tokens++
			}
			if strings.Contains(q.Path, "/manifests/") || strings.Contains(q.Path, "/blobs/") {
				if !q.Authorization || q.Status >= 300 {
					t.Errorf("request %+v: want a bearer token and success", q)
				}
				authorized++
			}
		}
		if tokens != 1 || authorized == 0 {
			t.Errorf("%d token requests and %d authorized requests; want one token reused", tokens, authorized)
		}
	})
	t.Run("token needs credentials", func(t *testing.T) {
		const user, pass = "bob", "t0ken-pass"
		reg := registry.Start(t, registry.WithBearerAuth(user, pass))
		if _, err := testimage.Push(ctxT(t), reg.Host(), "priv:1", img, testimage.WithAuth(user, pass)); err != nil {
			t.Fatal(err)
		}
		ref := parse(t, reg.Host()+"/priv:1")

		credentials(t, nil)
		_, err := newRemote(t).Resolve(ctxT(t), ref, false)
		assertStatus(t, err, http.StatusUnauthorized, errdefs.ErrUnauthenticated)

		credentials(t, map[string][2]string{reg.Host(): {user, pass}})
		blobs := pull(t, newRemote(t), ref, images.DefaultPlatform())
		assertBlobs(t, blobs, wantBlobs)
	})
}

func assertStatus(t *testing.T, err error, code int, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("error = %v, want %v", err, class)
	}
	var se *remotes.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not a *StatusError", err)
	}
	if se.StatusCode != code {
		t.Errorf("status %d, want %d", se.StatusCode, code)
	}
	if se.Temporary() != (code == 429 || code >= 500) {
		t.Errorf("Temporary() = %v for %d", se.Temporary(), code)
	}
	if se.Method == "" || !strings.HasPrefix(se.URL, "http") || strings.Contains(se.URL, "?") {
		t.Errorf("StatusError method %q URL %q", se.Method, se.URL)
	}
}

func TestStatusErrors(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	r := newRemote(t)
	layer := mustLayer(t, testimage.Gzip, testimage.File("f", []byte("z"), 0o644))
	img := &testimage.Image{Layers: []*testimage.Layer{layer}}
	if _, err := testimage.Push(ctxT(t), reg.Host(), "app:1.0", img); err != nil {
		t.Fatal(err)
	}
	ref := parse(t, reg.Host()+"/app:1.0")
	blob := layer.Descriptor(testimage.OCI)

	t.Run("manifest not found", func(t *testing.T) {
		_, err := r.Resolve(ctxT(t), parse(t, reg.Host()+"/app:nope"), false)
		assertStatus(t, err, http.StatusNotFound, errdefs.ErrNotFound)
		want := fmt.Sprintf("registry %s: manifest for app:nope not found (404)", reg.Host())
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	})
	t.Run("repository not found", func(t *testing.T) {
		_, err := r.Resolve(ctxT(t), parse(t, reg.Host()+"/nothing/here:1"), false)
		assertStatus(t, err, http.StatusNotFound, errdefs.ErrNotFound)
	})
	t.Run("blob not found", func(t *testing.T) {
		missing := ocispec.Descriptor{MediaType: images.MediaTypeOCILayerGzip, Digest: digest.FromString("missing"), Size: 7}
		_, _, err := r.Fetch(ctxT(t), ref, missing, 0, false)
		assertStatus(t, err, http.StatusNotFound, errdefs.ErrNotFound)
		if !strings.Contains(err.Error(), "blob "+missing.Digest.String()) {
			t.Errorf("message %q should name the blob", err)
		}
	})
	t.Run("manifest by digest not found", func(t *testing.T) {
		missing := ocispec.Descriptor{MediaType: images.MediaTypeOCIManifest, Digest: digest.FromString("missing"), Size: 7}
		_, _, err := r.Fetch(ctxT(t), ref, missing, 0, false)
		assertStatus(t, err, http.StatusNotFound, errdefs.ErrNotFound)
	})
	for _, code := range []int{500, 502, 503, 429} {
		t.Run(fmt.Sprintf("resolve %d then success", code), func(t *testing.T) {
			reg.FailNext(registry.ManifestPath("app", "1.0"), code, 1)
			_, err := r.Resolve(ctxT(t), ref, false)
			assertStatus(t, err, code, errdefs.ErrUnavailable)
			if _, err := r.Resolve(ctxT(t), ref, false); err != nil {
				t.Fatalf("second Resolve: %v", err)
			}
		})
	}
	t.Run("blob 500 then success", func(t *testing.T) {
		reg.FailNext(registry.BlobPath("app", blob.Digest), 500, 1)
		_, _, err := r.Fetch(ctxT(t), ref, blob, 0, false)
		assertStatus(t, err, 500, errdefs.ErrUnavailable)
		if !strings.Contains(err.Error(), "injected failure") {
			t.Errorf("message %q should carry the registry's explanation", err)
		}
		fetchAll(t, r, ref, blob)
	})
	for code, class := range map[int]error{403: errdefs.ErrPermissionDenied, 400: errdefs.ErrInvalidArgument, 409: errdefs.ErrInvalidArgument} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			reg.FailNext(registry.BlobPath("app", blob.Digest), code, 1)
			_, _, err := r.Fetch(ctxT(t), ref, blob, 0, false)
			assertStatus(t, err, code, class)
		})
	}
}

func TestNetworkErrors(t *testing.T) {
	credentials(t, nil)
	r := newRemote(t, remotes.WithDialTimeout(2*time.Second))

	t.Run("unknown host", func(t *testing.T) {
		_, err := r.Resolve(ctxT(t), parse(t, "no-such-registry.invalid/app:1"), false)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("error = %v, want ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), "no-such-registry.invalid") || !strings.Contains(err.Error(), "not found") {
			t.Errorf("message %q should name the host", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		_, err = r.Resolve(ctxT(t), parse(t, addr+"/app:1"), false)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("error = %v, want ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("message %q should name the registry", err)
		}
	})
	t.Run("response header timeout", func(t *testing.T) {
		// A server that accepts and never answers.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		r := newRemote(t, remotes.WithResponseHeaderTimeout(200*time.Millisecond))
		start := time.Now()
		_, err = r.Resolve(ctxT(t), parse(t, ln.Addr().String()+"/app:1"), false)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("error = %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("context canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := r.Resolve(ctx, parse(t, "127.0.0.1:1/app:1"), false)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want context.Canceled", err)
		}
	})
}

func TestLimits(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	img := &testimage.Image{
		Layers:      []*testimage.Layer{mustLayer(t, testimage.Gzip, testimage.File("f", []byte("q"), 0o644))},
		Annotations: map[string]string{"padding": strings.Repeat("x", 4096)},
	}
	want, err := testimage.Push(ctxT(t), reg.Host(), "fat:1", img)
	if err != nil {
		t.Fatal(err)
	}
	ref := parse(t, reg.Host()+"/fat:1")
	r := newRemote(t, remotes.WithMaxManifestSize(1024), remotes.WithMaxConfigSize(10))

	_, err = r.Resolve(ctxT(t), ref, false)
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !strings.Contains(err.Error(), "1024") {
		t.Errorf("Resolve of a %d-byte manifest: %v, want ErrResourceExhausted naming the limit", want.Size, err)
	}
	_, _, err = r.Fetch(ctxT(t), ref, want, 0, false)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("Fetch of a %d-byte manifest: %v, want ErrResourceExhausted", want.Size, err)
	}
	b, _ := img.Build()
	_, _, err = r.Fetch(ctxT(t), ref, b.Config, 0, false)
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("Fetch of a %d-byte config: %v, want ErrResourceExhausted", b.Config.Size, err)
	}
	// Within the default limits it resolves.
	if got, err := newRemote(t).Resolve(ctxT(t), ref, false); err != nil || got.Digest != want.Digest {
		t.Errorf("Resolve with default limits: %v, %v", got.Digest, err)
	}
}

func TestMaxConnsPerRegistry(t *testing.T) {
	credentials(t, nil)
	reg := registry.Start(t)
	layer := mustLayer(t, testimage.Gzip, testimage.File("f", []byte("conn"), 0o644))
	if _, err := testimage.Push(ctxT(t), reg.Host(), "c:1", &testimage.Image{Layers: []*testimage.Layer{layer}}); err != nil {
		t.Fatal(err)
	}
	ref := parse(t, reg.Host()+"/c:1")
	r := newRemote(t, remotes.WithMaxConnsPerRegistry(1))
	desc := layer.Descriptor(testimage.OCI)

	rc, _, err := r.Fetch(ctxT(t), ref, desc, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := r.Fetch(ctx, ref, desc, 0, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second fetch while the first holds the only slot: %v, want deadline exceeded", err)
	}
	rc.Close()
	fetchAll(t, r, ref, desc)
}
