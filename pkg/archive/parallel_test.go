package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// withWriters runs f with parallelWriters set to n and returns how many
// files went to writers.
func withWriters(t *testing.T, n int, f func()) int64 {
	t.Helper()
	var async atomic.Int64
	oldN, oldHook := parallelWriters, testHookAsync
	parallelWriters, testHookAsync = n, func() { async.Add(1) }
	defer func() { parallelWriters, testHookAsync = oldN, oldHook }()
	f()
	return async.Load()
}

// applyWith applies blob in overlay form into a fresh directory with n
// writers and returns the directory, the error and the files written by
// writers.
func applyWith(t *testing.T, n int, blob []byte, opts Options) (string, error, int64) {
	t.Helper()
	d, err := os.MkdirTemp(t.TempDir(), "w")
	if err != nil {
		t.Fatal(err)
	}
	opts.Mode = OverlayForm
	var applyErr error
	async := withWriters(t, n, func() {
		_, applyErr = Apply(context.Background(), d, bytes.NewReader(blob), opts)
	})
	return d, applyErr, async
}

// randomLayer returns a layer meant to trip up parallel writers: files
// rewritten later in the layer, files replaced by directories and back,
// whiteouts of names just written, hard links to files just written,
// parents that exist only implicitly, files inside a path that is a file,
// more directories than the applier caches, and files on both sides of
// parallelFileMax.
func randomLayer(r *rand.Rand, n int, failing bool) []ent {
	var out []ent
	var files []string
	dirs := []string{"a", "b/c", "d/e/f"}
	for i := 0; i < 200; i++ {
		dirs = append(dirs, fmt.Sprintf("many/d%03d", i)) // > maxCachedDirs
	}
	for _, d := range dirs[:3] {
		out = append(out, dir(d, 0o755))
	}
	content := func() string {
		size := r.Intn(4096)
		switch r.Intn(20) {
		case 0:
			size = parallelFileMax + r.Intn(4096) // streamed by the applier
		case 1:
			size = parallelFileMax // the largest handed out
		case 2:
			size = 0
		}
		return strings.Repeat(string(rune('a'+r.Intn(26))), size)
	}
	for i := 0; i < n; i++ {
		d := dirs[r.Intn(len(dirs))]
		name := fmt.Sprintf("%s/f%d", d, r.Intn(40))
		switch k := r.Intn(100); {
		case k < 70:
			e := file(name, content(), []int64{0o644, 0o755, 0o4755, 0o600}[r.Intn(4)])
			e.UID, e.GID = r.Intn(3)*1000, r.Intn(3)*1000
			if r.Intn(10) == 0 {
				e.Xattrs = map[string]string{"user.k": fmt.Sprint(i)}
			}
			out = append(out, e)
			files = append(files, name)
		case k < 76 && len(files) > 0: // rewrite a file just written
			out = append(out, file(files[len(files)-1], content(), 0o640))
		case k < 80 && len(files) > 0: // a directory where a file is
			p := files[r.Intn(len(files))]
			out = append(out, dir(p, 0o711), file(p+"/inner", content(), 0o644))
		case k < 84 && len(files) > 0: // a whiteout of a name just written
			p := files[len(files)-1]
			out = append(out, whiteout(filepath.Dir(p)+"/.wh."+filepath.Base(p)))
		case k < 88 && len(files) > 0: // a hard link to a file just written
			out = append(out, hardlink(name+"-link", files[len(files)-1]))
		case k < 91:
			out = append(out, symlink(name, "../"+d))
		case k < 94 && len(files) > 0: // a file where a directory is
			p := dirs[3+r.Intn(len(dirs)-3)]
			out = append(out, file(p, content(), 0o644))
		case k < 96 && failing && len(files) > 0: // below a file: fails
			out = append(out, file(files[r.Intn(len(files))]+"/below", "x", 0o644))
			failing = false
		default:
			out = append(out, whiteout(d+"/.wh..wh..opq"))
		}
	}
	return out
}

// TestParallelWritersMatchSequential applies random layers with and
// without writers: the trees (or the errors) must be the same.
func TestParallelWritersMatchSequential(t *testing.T) {
	requireRoot(t)
	const layers = 12
	var totalAsync int64
	errorsSeen := 0
	for seed := int64(1); seed <= layers; seed++ {
		r := rand.New(rand.NewSource(seed))
		entries := randomLayer(r, 150+r.Intn(300), seed%4 == 0)
		blob := mkLayer(t, []testimage.Compression{testimage.Gzip, testimage.Zstd, testimage.Uncompressed}[seed%3], entries...).Blob

		seqDir, seqErr, seqAsync := applyWith(t, 0, blob, Options{})
		if seqAsync != 0 {
			t.Fatalf("seed %d: %d files went to writers with parallelWriters = 0", seed, seqAsync)
		}
		for _, n := range []int{1, 2, 8} {
			parDir, parErr, async := applyWith(t, n, blob, Options{})
			totalAsync += async
			what := fmt.Sprintf("seed %d, %d writers", seed, n)
			if fmt.Sprint(parErr) != fmt.Sprint(seqErr) {
				t.Fatalf("%s: error %v, sequential %v", what, parErr, seqErr)
			}
			if seqErr != nil {
				continue
			}
			diffTrees(t, what, scan(t, seqDir), scan(t, parDir))
			sameLinks(t, what, seqDir, parDir)
		}
		if seqErr != nil {
			errorsSeen++
		}
	}
	if totalAsync == 0 {
		t.Fatal("no file went to a writer: the test exercised nothing")
	}
	if errorsSeen == 0 || errorsSeen == layers {
		t.Errorf("%d of %d layers failed: want some failing (a file used as a parent) and some not", errorsSeen, layers)
	}
}

// sameLinks checks that the hard links of seq are hard links in par too.
func sameLinks(t *testing.T, what, seq, par string) {
	t.Helper()
	groups := map[uint64][]string{}
	for p, n := range scan(t, seq) {
		if n.Type == "file" {
			groups[n.Ino] = append(groups[n.Ino], p)
		}
	}
	for _, paths := range groups {
		for _, p := range paths[1:] {
			a, b := stat(t, filepath.Join(par, paths[0])), stat(t, filepath.Join(par, p))
			if a.Ino != b.Ino {
				t.Errorf("%s: %s and %s are hard links sequentially but not with writers", what, paths[0], p)
			}
		}
	}
}

// TestParallelWritersOracle checks a layer of many small files against the
// oracle, and that writers wrote them.
func TestParallelWritersOracle(t *testing.T) {
	requireRoot(t)
	var entries []ent
	for d := 0; d < 150; d++ {
		entries = append(entries, dir(fmt.Sprintf("usr/d%03d", d), 0o755))
		for f := 0; f < 10; f++ {
			e := file(fmt.Sprintf("usr/d%03d/f%d", d, f), fmt.Sprintf("file %d/%d", d, f), 0o644+int64(f%2)*0o111)
			e.UID, e.GID = d, f
			entries = append(entries, e)
		}
	}
	entries = append(entries, hardlink("usr/link", "usr/d149/f9"))
	l := mkLayer(t, testimage.Zstd, entries...)
	d, err, async := applyWith(t, parallelWriters, l.Blob, Options{DiffID: l.DiffID})
	if err != nil {
		t.Fatal(err)
	}
	if async < 1000 {
		t.Errorf("%d of 1500 files went to writers, want all", async)
	}
	m := newModel(OverlayForm)
	m.apply(entries)
	m.checkAgainst(t, "writers", d)
	wantFile(t, filepath.Join(d, "usr/link"), "file 149/9")
}

// TestParallelWritersNotForDirect: Direct mode and a non-empty target
// directory apply sequentially (names there were not created by this
// apply).
func TestParallelWritersNotForDirect(t *testing.T) {
	requireRoot(t)
	blob := mkLayer(t, testimage.Gzip, file("x/a", "new", 0o644), file("x/b", "new", 0o644)).Blob

	d := t.TempDir()
	if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "x/a"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{OverlayForm, Direct} {
		async := withWriters(t, 2, func() {
			if _, err := Apply(context.Background(), d, bytes.NewReader(blob), Options{Mode: mode}); err != nil {
				t.Fatalf("%v: %v", mode, err)
			}
		})
		if async != 0 {
			t.Errorf("%v into a non-empty directory: %d files went to writers, want 0", mode, async)
		}
		wantFile(t, filepath.Join(d, "x/a"), "new")
	}
}

// TestParallelWriterError: a writer's failure (here ENOSPC on a small
// tmpfs) fails the apply with an error naming an entry, classified as
// errdefs.ErrResourceExhausted, and nothing is left in flight.
func TestParallelWriterError(t *testing.T) {
	requireRoot(t)
	d := t.TempDir()
	if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	var entries []ent
	for i := 0; i < 200; i++ {
		entries = append(entries, file(fmt.Sprintf("f%03d", i), strings.Repeat("x", 8<<10), 0o644))
	}
	blob := mkLayer(t, testimage.Gzip, entries...).Blob
	target := filepath.Join(d, "layer")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	async := withWriters(t, 2, func() {
		_, err = Apply(context.Background(), target, bytes.NewReader(blob), Options{Mode: OverlayForm})
	})
	if async == 0 {
		t.Fatal("no file went to a writer")
	}
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Apply = %v, want ENOSPC classified as ErrResourceExhausted", err)
	}
	if !strings.Contains(err.Error(), `"f`) {
		t.Errorf("error %q does not name the entry", err)
	}
}

// TestParallelWriterKeepsTarOrder: a name written by a writer and then
// used as a parent fails exactly as without writers; a whiteout of a name
// just written keeps the file (overlay form).
func TestParallelWriterKeepsTarOrder(t *testing.T) {
	requireRoot(t)
	blob := mkLayer(t, testimage.Gzip, file("a", "file", 0o644), file("a/b", "below a file", 0o644)).Blob
	_, seqErr, _ := applyWith(t, 0, blob, Options{})
	_, parErr, async := applyWith(t, 2, blob, Options{})
	if async == 0 || parErr == nil || !errors.Is(parErr, errdefs.ErrInvalidArgument) || parErr.Error() != seqErr.Error() {
		t.Fatalf("with writers: %v (%d async), without: %v", parErr, async, seqErr)
	}

	blob = mkLayer(t, testimage.Gzip, file("d/x", "kept", 0o644), whiteout("d/.wh.x"), file("d/y", "y", 0o644), tarEnt("d/y", tar.TypeSymlink, "x")).Blob
	d, err, _ := applyWith(t, 2, blob, Options{})
	if err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(d, "d/x"), "kept")
	if l, err := os.Readlink(filepath.Join(d, "d/y")); err != nil || l != "x" {
		t.Errorf("d/y = %q, %v; want a symlink to x replacing the file", l, err)
	}
}

func tarEnt(name string, typ byte, link string) ent {
	return ent{Name: name, Type: typ, Mode: 0o777, Link: link}
}
