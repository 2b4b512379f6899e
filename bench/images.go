package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

// cacheVersion changes when the images' contents change, so that stale
// cached layers are rebuilt.
const cacheVersion = "v1"

// layerInfo describes a built layer.
type layerInfo struct {
	Key     string        `json:"key"`
	Digest  digest.Digest `json:"digest"`
	DiffID  digest.Digest `json:"diffID"`
	Size    int64         `json:"size"`    // compressed
	TarSize int64         `json:"tarSize"` // uncompressed
	Entries int           `json:"entries"`
	Comp    string        `json:"compression"`
	path    string        // the blob file in the cache
}

// image is a pushed image.
type image struct {
	ref    string
	layers []layerInfo
	img    *testimage.Image
	blobs  int64 // bytes of its manifest, config and layers
}

func (im *image) compressed() (n int64) {
	for _, l := range im.layers {
		n += l.Size
	}
	return n
}

func (im *image) uncompressed() (n int64) {
	for _, l := range im.layers {
		n += l.TarSize
	}
	return n
}

func (im *image) entries() (n int) {
	for _, l := range im.layers {
		n += l.Entries
	}
	return n
}

type imageSet struct {
	debian, multiGzip, multiZstd, busybox *image
	shared                                []*image
	// sharedUnique is the bytes of every distinct blob of the shared set.
	sharedUnique int64
}

func (s *imageSet) sharedRefs() []string {
	var refs []string
	for _, im := range s.shared {
		refs = append(refs, im.ref)
	}
	return refs
}

// buildImages builds (or loads from bench/.cache) and pushes every image.
func (b *bench) buildImages(ctx context.Context) (*imageSet, error) {
	dir := filepath.Join(b.cfg.cache, "layers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &imageSet{}
	host := b.reg.addr

	// (1) Debian minbase as one large gzip layer.
	rootfs, err := b.debootstrap()
	if err != nil {
		return nil, err
	}
	debian, err := b.layer("debian-bookworm-minbase", testimage.Gzip, func(t *tarBuilder) error { return t.rootfs(rootfs) })
	if err != nil {
		return nil, err
	}
	if s.debian, err = b.push(ctx, host, "bench/debian:bookworm", []*cachedLayer{debian}); err != nil {
		return nil, err
	}

	// (2), (3) eight layers: many small files, whiteouts, an opaque dir.
	var multi [2][]*cachedLayer
	for i, c := range []testimage.Compression{testimage.Gzip, testimage.Zstd} {
		for _, spec := range multiLayerSpecs() {
			l, err := b.layer("multi-"+spec.name, c, spec.build)
			if err != nil {
				return nil, err
			}
			multi[i] = append(multi[i], l)
		}
	}
	if s.multiGzip, err = b.push(ctx, host, "bench/multi:gzip", multi[0]); err != nil {
		return nil, err
	}
	if s.multiZstd, err = b.push(ctx, host, "bench/multi:zstd", multi[1]); err != nil {
		return nil, err
	}

	// (4) ten images sharing the Debian layer, each with a small layer of its own.
	seen := map[digest.Digest]bool{}
	for i := 0; i < 10; i++ {
		i := i
		own, err := b.layer(fmt.Sprintf("shared-own-%d", i), testimage.Gzip, func(t *tarBuilder) error {
			t.dir("opt", 0o755)
			t.dir("opt/app", 0o755)
			t.file("opt/app/id", []byte(fmt.Sprintf("image %d\n", i)), 0o644)
			t.file("opt/app/data.bin", randomBytes(512<<10, int64(1000+i)), 0o644)
			for j := 0; j < 20; j++ {
				t.file(fmt.Sprintf("opt/app/conf-%02d.txt", j), []byte(strings.Repeat(fmt.Sprintf("key%d=value%d\n", j, i), 40)), 0o644)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		im, err := b.push(ctx, host, fmt.Sprintf("bench/shared-%d:latest", i), []*cachedLayer{debian, own})
		if err != nil {
			return nil, err
		}
		s.shared = append(s.shared, im)
		built, err := im.img.Build()
		if err != nil {
			return nil, err
		}
		for _, d := range built.Blobs() {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				s.sharedUnique += d.Size
			}
		}
	}

	// (5) busybox, for run. Its applets are hard links carrying the
	// binary's mode: containerd applies a hard link entry's mode to the
	// shared inode (testimage.Hardlink's 0644 would leave busybox not
	// executable there).
	bbBin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("busybox: %w (install busybox-static)", err)
	}
	bbLayer, err := b.layer(fmt.Sprintf("busybox-%s", digest.FromBytes(bbBin).Encoded()[:12]), testimage.Gzip, func(t *tarBuilder) error {
		for _, d := range []string{"bin", "etc", "home", "root", "tmp"} {
			t.dir(d, 0o755)
		}
		t.file("bin/busybox", bbBin, 0o755)
		t.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644)
		t.file("etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
		for _, a := range testimage.BusyboxApplets {
			t.write(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeLink, Mode: 0o755, Linkname: "bin/busybox"}, nil)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.busybox, err = b.push(ctx, host, "bench/busybox:latest", []*cachedLayer{bbLayer}); err != nil {
		return nil, err
	}
	for _, im := range []*image{s.debian, s.multiGzip, s.multiZstd, s.shared[0]} {
		b.logf("image %s: %d layers, %s compressed, %s uncompressed, %d entries", im.ref, len(im.layers), mb(im.compressed()), mb(im.uncompressed()), im.entries())
	}
	return s, nil
}

// cachedLayer is a layer whose blob is on disk in bench/.cache/layers.
type cachedLayer struct {
	info  layerInfo
	layer *testimage.Layer
}

// layer returns the layer key compressed with c, from the cache or built
// with build (the tar) and compressed with pigz or zstd.
func (b *bench) layer(key string, c testimage.Compression, build func(*tarBuilder) error) (*cachedLayer, error) {
	ext := map[testimage.Compression]string{testimage.Gzip: "gz", testimage.Zstd: "zst"}[c]
	name := fmt.Sprintf("%s-%s.%s", key, cacheVersion, ext)
	blobPath := filepath.Join(b.cfg.cache, "layers", name)
	metaPath := blobPath + ".json"
	var info layerInfo
	if m, err := os.ReadFile(metaPath); err == nil && json.Unmarshal(m, &info) == nil {
		if blob, err := os.ReadFile(blobPath); err == nil && digest.FromBytes(blob) == info.Digest {
			info.path = blobPath
			return &cachedLayer{info: info, layer: &testimage.Layer{Blob: blob, Digest: info.Digest, DiffID: info.DiffID, Compression: c}}, nil
		}
	}
	t := newTarBuilder()
	if err := build(t); err != nil {
		return nil, fmt.Errorf("layer %s: %w", key, err)
	}
	tarBytes, err := t.close()
	if err != nil {
		return nil, err
	}
	var blob []byte
	switch c {
	case testimage.Gzip:
		gz := "gzip"
		if _, err := exec.LookPath("pigz"); err == nil {
			gz = "pigz"
		}
		blob, err = pipe(tarBytes, gz, "-6", "-n", "-c")
	case testimage.Zstd:
		blob, err = pipe(tarBytes, "zstd", "-3", "-T0", "-q", "-c")
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: compress: %w", key, err)
	}
	info = layerInfo{Key: key, Digest: digest.FromBytes(blob), DiffID: digest.FromBytes(tarBytes), Size: int64(len(blob)), TarSize: int64(len(tarBytes)), Entries: t.entries, Comp: c.String()}
	if err := os.WriteFile(blobPath, blob, 0o644); err != nil {
		return nil, err
	}
	m, _ := json.MarshalIndent(info, "", "  ")
	if err := os.WriteFile(metaPath, m, 0o644); err != nil {
		return nil, err
	}
	info.path = blobPath
	b.logf("built layer %s (%s): %s → %s, %d entries", key, c, mb(info.TarSize), mb(info.Size), info.Entries)
	return &cachedLayer{info: info, layer: &testimage.Layer{Blob: blob, Digest: info.Digest, DiffID: info.DiffID, Compression: c}}, nil
}

func (b *bench) push(ctx context.Context, host, ref string, layers []*cachedLayer) (*image, error) {
	img := &testimage.Image{
		Format: testimage.OCI,
		Config: ocispec.Image{
			Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
			Config: ocispec.ImageConfig{
				Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Cmd: []string{"/bin/sh"},
			},
		},
	}
	im := &image{ref: host + "/" + ref, img: img}
	for _, l := range layers {
		img.Layers = append(img.Layers, l.layer)
		im.layers = append(im.layers, l.info)
	}
	if _, err := testimage.Push(ctx, host, ref, img); err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	built, err := img.Build()
	if err != nil {
		return nil, err
	}
	for _, d := range built.Blobs() {
		im.blobs += d.Size
	}
	return im, nil
}

// debootstrap returns a Debian bookworm minbase rootfs, made once with
// debootstrap into bench/.cache.
func (b *bench) debootstrap() (string, error) {
	dir := filepath.Join(b.cfg.cache, "debian-rootfs")
	if _, err := os.Stat(filepath.Join(dir, "etc", "debian_version")); err == nil {
		return dir, nil
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	b.logf("debootstrap --variant=minbase bookworm (once; cached in %s)", dir)
	cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", tmp, b.cfg.mirror)
	logf, err := os.Create(filepath.Join(b.cfg.cache, "debootstrap.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debootstrap: %w (see %s)", err, logf.Name())
	}
	return dir, os.Rename(tmp, dir)
}

// pipe runs name with input on its stdin and returns its stdout.
func pipe(input []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(input)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, errb.String())
	}
	return out.Bytes(), nil
}

func randomBytes(n int, seed int64) []byte {
	b := make([]byte, n)
	_, _ = rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// ---------------------------------------------------------------- layers

type layerSpec struct {
	name  string
	build func(*tarBuilder) error
}

// multiLayerSpecs are the eight layers of the multi-layer image: a base
// with files later deleted, the Go source tree (~11k small files), an
// incompressible binary, whiteouts of files and of a whole directory,
// opaque directories, hard links and symlinks, more of the Go tree, and a
// small config layer.
func multiLayerSpecs() []layerSpec {
	goroot := "/usr/local/go"
	return []layerSpec{
		{"1-base", func(t *tarBuilder) error {
			for _, d := range []string{"etc", "etc/app", "usr", "usr/local", "usr/local/bin", "opt", "opt/legacy", "var", "var/cache", "var/cache/app", "tmp"} {
				t.dir(d, 0o755)
			}
			for i := 0; i < 300; i++ {
				t.file(fmt.Sprintf("opt/legacy/f%03d.txt", i), []byte(strings.Repeat(fmt.Sprintf("legacy line %d\n", i), 30)), 0o644)
			}
			for i := 0; i < 100; i++ {
				t.file(fmt.Sprintf("var/cache/app/c%03d.bin", i), randomBytes(4096, int64(i)), 0o644)
			}
			t.file("etc/app/config.yaml", []byte("mode: base\n"), 0o644)
			t.symlink("usr/local/bin/legacy", "/opt/legacy/f000.txt")
			return nil
		}},
		{"2-gosrc", func(t *tarBuilder) error {
			t.dir("usr/local/go", 0o755)
			return t.tree(filepath.Join(goroot, "src"), "usr/local/go/src")
		}},
		{"3-binary", func(t *tarBuilder) error {
			t.file("usr/local/bin/app", randomBytes(24<<20, 42), 0o755)
			t.symlink("usr/local/bin/app-link", "app")
			return nil
		}},
		{"4-whiteouts", func(t *tarBuilder) error {
			for i := 0; i < 300; i += 5 {
				t.whiteout("opt/legacy", fmt.Sprintf("f%03d.txt", i))
			}
			t.whiteout("usr/local/go/src", "archive")
			t.whiteout("usr/local/go/src/cmd", "vendor")
			t.whiteout("usr/local/bin", "legacy")
			t.file("etc/app/config.yaml", []byte("mode: changed\n"), 0o644)
			return nil
		}},
		{"5-opaque", func(t *tarBuilder) error {
			t.dir("opt/legacy", 0o755)
			t.opaque("opt/legacy")
			for i := 0; i < 50; i++ {
				t.file(fmt.Sprintf("opt/legacy/new%02d.txt", i), []byte(fmt.Sprintf("new %d\n", i)), 0o644)
			}
			t.dir("var/cache/app", 0o755)
			t.opaque("var/cache/app")
			t.file("var/cache/app/README", []byte("emptied\n"), 0o644)
			return nil
		}},
		{"6-links", func(t *tarBuilder) error {
			t.dir("usr/local/share", 0o755)
			t.dir("usr/local/share/data", 0o755)
			t.file("usr/local/share/data/blob", randomBytes(1<<20, 7), 0o644)
			for i := 0; i < 200; i++ {
				t.hardlink(fmt.Sprintf("usr/local/share/data/h%03d", i), "usr/local/share/data/blob")
				t.symlink(fmt.Sprintf("usr/local/share/data/s%03d", i), "blob")
			}
			return nil
		}},
		{"7-gomisc", func(t *tarBuilder) error {
			for _, d := range []string{"api", "lib", "misc"} {
				if err := t.tree(filepath.Join(goroot, d), "usr/local/go/"+d); err != nil {
					return err
				}
			}
			return nil
		}},
		{"8-config", func(t *tarBuilder) error {
			t.file("etc/app/app.conf", []byte("listen: :8080\n"), 0o644)
			t.file("etc/app/version", []byte("1.0.0\n"), 0o644)
			return nil
		}},
	}
}

// tarBuilder writes a deterministic tar (root-owned, fixed mtime).
type tarBuilder struct {
	buf     bytes.Buffer
	tw      *tar.Writer
	entries int
	err     error
}

func newTarBuilder() *tarBuilder {
	t := &tarBuilder{}
	t.tw = tar.NewWriter(&t.buf)
	return t
}

func (t *tarBuilder) write(h *tar.Header, data []byte) {
	if t.err != nil {
		return
	}
	h.ModTime = testimage.Epoch
	h.Format = tar.FormatPAX
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(data))
	}
	if t.err = t.tw.WriteHeader(h); t.err == nil && len(data) > 0 {
		_, t.err = t.tw.Write(data)
	}
	t.entries++
}

func (t *tarBuilder) dir(name string, mode int64) {
	t.write(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: mode}, nil)
}

func (t *tarBuilder) file(name string, data []byte, mode int64) {
	t.write(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, data)
}

func (t *tarBuilder) symlink(name, target string) {
	t.write(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Mode: 0o777, Linkname: target}, nil)
}

func (t *tarBuilder) hardlink(name, target string) {
	t.write(&tar.Header{Name: name, Typeflag: tar.TypeLink, Mode: 0o644, Linkname: target}, nil)
}

func (t *tarBuilder) whiteout(dir, name string) { t.file(dir+"/.wh."+name, nil, 0o644) }

func (t *tarBuilder) opaque(dir string) { t.file(dir+"/.wh..wh..opq", nil, 0o644) }

// tree adds the files under src as prefix/...
func (t *tarBuilder) tree(src, prefix string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		name := prefix
		if rel != "." {
			name = prefix + "/" + filepath.ToSlash(rel)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := int64(info.Mode().Perm())
		switch {
		case d.IsDir():
			t.dir(name, mode)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			t.symlink(name, target)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			t.file(name, data, mode)
		}
		return t.err
	})
}

// rootfs adds a debootstrapped root filesystem with GNU tar (owners,
// modes, hard links as they are), leaving out /dev nodes, apt's downloaded
// packages and lists, as Debian's published images do.
func (t *tarBuilder) rootfs(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	args := []string{"-C", dir, "--numeric-owner", "--sort=name", "--mtime=2024-01-02 03:04:05",
		"--exclude=dev/*", "--exclude=proc/*", "--exclude=sys/*", "--exclude=var/cache/apt/archives/*.deb",
		"--exclude=var/lib/apt/lists/*", "--exclude=var/log/*.log", "-cf", "-"}
	for _, e := range ents {
		args = append(args, e.Name())
	}
	out, err := exec.Command("tar", args...).Output()
	if err != nil {
		return fmt.Errorf("tar rootfs: %w", err)
	}
	n, err := countEntries(out)
	if err != nil {
		return err
	}
	// Replace the builder's content with the tar as GNU tar made it.
	t.buf.Reset()
	t.buf.Write(out)
	t.tw = nil
	t.entries = n
	return nil
}

func (t *tarBuilder) close() ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.tw != nil {
		if err := t.tw.Close(); err != nil {
			return nil, err
		}
	}
	return t.buf.Bytes(), nil
}

func countEntries(b []byte) (int, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	n := 0
	for {
		_, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}
