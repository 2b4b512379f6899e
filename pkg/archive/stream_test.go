package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

func randBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestCompressions(t *testing.T) {
	requireRoot(t)
	big := randBytes(1, 3<<20)
	for _, c := range []testimage.Compression{testimage.Gzip, testimage.Zstd, testimage.Uncompressed} {
		t.Run(c.String(), func(t *testing.T) {
			l, err := testimage.NewLayer(c,
				testimage.Dir("d", 0o755), testimage.File("d/small", []byte("small"), 0o644),
				testimage.File("d/big", big, 0o600), testimage.Symlink("d/link", "big"))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			res, err := Apply(context.Background(), dir, bytes.NewReader(l.Blob), Options{Mode: Direct, DiffID: l.DiffID})
			if err != nil {
				t.Fatal(err)
			}
			if res.DiffID != l.DiffID || res.Size != int64(len(l.Tar)) || res.Entries != 4 {
				t.Errorf("Result = %+v, want diffID %s size %d entries 4", res, l.DiffID, len(l.Tar))
			}
			if got, err := os.ReadFile(filepath.Join(dir, "d/big")); err != nil || !bytes.Equal(got, big) {
				t.Errorf("d/big differs (err %v)", err)
			}
			wantFile(t, filepath.Join(dir, "d/small"), "small")
		})
	}
}

// TestDiffIDCoversPadding: the diffID is that of the whole stream, including
// record padding after the end-of-archive blocks.
func TestDiffIDCoversPadding(t *testing.T) {
	requireRoot(t)
	tb := append(mkTar(t, file("f", "x", 0o644)), make([]byte, 9000)...)
	res, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(tb), Options{Mode: Direct})
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.FromBytes(tb); res.DiffID != want || res.Size != int64(len(tb)) {
		t.Errorf("Result = %+v, want %s, size %d", res, want, len(tb))
	}
}

func TestDiffIDMismatch(t *testing.T) {
	requireRoot(t)
	l := mkLayer(t, testimage.Zstd, file("f", "content", 0o644))
	wrong := digest.FromString("something else")
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(l.Blob), Options{Mode: OverlayForm, DiffID: wrong})
	if !errors.Is(err, errdefs.ErrDataLoss) {
		t.Fatalf("Apply = %v, want ErrDataLoss", err)
	}
	for _, s := range []string{"mismatch", l.DiffID.String(), wrong.String()} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// gzipBomb returns a gzip stream of a tar holding one file of n zero bytes,
// built from repeated gzip members so that building it is cheap.
func gzipBomb(t *testing.T, n int64) []byte {
	t.Helper()
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: n}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	member := func(b []byte) []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	const chunk = 1 << 20
	zeros := member(make([]byte, chunk))
	out := member(hdr.Bytes())
	for i := int64(0); i < n/chunk; i++ {
		out = append(out, zeros...)
	}
	return out
}

func TestDecompressionBomb(t *testing.T) {
	requireRoot(t)
	bomb := gzipBomb(t, 200<<20)
	t.Logf("bomb: %d compressed bytes, 200 MiB uncompressed", len(bomb))
	start := time.Now()
	dir := t.TempDir()
	_, err := Apply(context.Background(), dir, bytes.NewReader(bomb), Options{Mode: Direct, MaxSize: 10 << 20})
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("Apply = %v, want ErrResourceExhausted", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v to notice the bomb", d)
	}
	if fi, err := os.Stat(filepath.Join(dir, "zeros")); err == nil && fi.Size() > 10<<20 {
		t.Errorf("wrote %d bytes, more than MaxSize", fi.Size())
	}
}

func TestMalformed(t *testing.T) {
	requireRoot(t)
	content := randBytes(2, 1<<20)
	gz := mkLayer(t, testimage.Gzip, file("a", "a", 0o644), file("big", string(content), 0o644)).Blob
	zs := mkLayer(t, testimage.Zstd, file("a", "a", 0o644), file("big", string(content), 0o644)).Blob
	plain := mkTar(t, file("a", "a", 0o644), file("big", string(content), 0o644))
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-8] ^= 0xff // the gzip trailer's CRC32

	cases := []struct {
		name string
		data []byte
		err  error
		msg  string
	}{
		{"random bytes", randBytes(3, 4096), errdefs.ErrInvalidArgument, "layer is not a tar archive"},
		{"short random bytes", randBytes(4, 100), errdefs.ErrInvalidArgument, "layer is not a tar archive"},
		{"truncated gzip", gz[:len(gz)/2], errdefs.ErrInvalidArgument, "layer truncated at entry 2"},
		{"truncated zstd", zs[:len(zs)/2], errdefs.ErrInvalidArgument, "truncated at entry 2"},
		{"truncated tar", plain[:len(plain)/2], errdefs.ErrInvalidArgument, "layer truncated at entry 2"},
		{"gzip header only", gz[:10], errdefs.ErrInvalidArgument, ""},
		{"gzip bad CRC", badCRC, errdefs.ErrDataLoss, "checksum"},
		{"gzip of garbage", mkGzip(randBytes(5, 4096)), errdefs.ErrInvalidArgument, "layer is not a tar archive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(tc.data), Options{Mode: Direct})
			if !errors.Is(err, tc.err) {
				t.Fatalf("Apply = %v, want %v", err, tc.err)
			}
			t.Logf("%v", err)
			// A worker retries what matches io.ErrUnexpectedEOF (a cut
			// download); a bad layer is the layer's fault and must not.
			if errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Apply = %v: matches io.ErrUnexpectedEOF, so it would be retried", err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func mkGzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestSourceAndContextErrors(t *testing.T) {
	requireRoot(t)
	l := mkLayer(t, testimage.Gzip, file("f", string(randBytes(6, 1<<20)), 0o644))
	boom := fmt.Errorf("connection reset: %w", errdefs.ErrUnavailable)
	_, err := Apply(context.Background(), t.TempDir(), &failingReader{r: bytes.NewReader(l.Blob), n: 1000, err: boom}, Options{Mode: Direct})
	if !errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("source error: Apply = %v, want the source's error (unavailable), not invalid argument", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(l.Blob), Options{Mode: Direct}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: Apply = %v, want context.Canceled", err)
	}
}

// watchedReader records reads made after Apply returned.
type watchedReader struct {
	r        io.Reader
	returned atomic.Bool
	late     atomic.Int32
	onRead   func(n int64)
	total    int64
}

func (w *watchedReader) Read(p []byte) (int, error) {
	if w.returned.Load() {
		w.late.Add(1)
	}
	if len(p) > 4096 {
		p = p[:4096] // many small reads: the pipeline is busy when Apply fails
	}
	n, err := w.r.Read(p)
	w.total += int64(n)
	if w.onRead != nil {
		w.onRead(w.total)
	}
	return n, err
}

// TestStopsReading: whatever the failure, Apply returns only once it has
// stopped reading the caller's reader.
func TestStopsReading(t *testing.T) {
	requireRoot(t)
	var entries []ent
	for i := 0; i < 100; i++ {
		entries = append(entries, file(fmt.Sprintf("f%03d", i), string(randBytes(int64(i), 24<<10)), 0o644))
	}
	hostile := append([]ent{file("ok", "x", 0o644), file("../escape", "x", 0o644)}, entries...)
	for _, c := range []testimage.Compression{testimage.Gzip, testimage.Uncompressed} {
		t.Run(c.String()+"/invalid entry", func(t *testing.T) {
			w := &watchedReader{r: bytes.NewReader(mkLayer(t, c, hostile...).Blob)}
			_, err := Apply(context.Background(), t.TempDir(), w, Options{Mode: Direct})
			w.returned.Store(true)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Apply = %v, want ErrInvalidArgument", err)
			}
			time.Sleep(20 * time.Millisecond)
			if n := w.late.Load(); n > 0 {
				t.Errorf("%d reads after Apply returned", n)
			}
		})
		t.Run(c.String()+"/cancelled midway", func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := &watchedReader{r: bytes.NewReader(mkLayer(t, c, entries...).Blob)}
			w.onRead = func(total int64) {
				if total > 1<<20 {
					cancel()
				}
			}
			_, err := Apply(ctx, t.TempDir(), w, Options{Mode: Direct})
			w.returned.Store(true)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Apply = %v, want context.Canceled", err)
			}
			time.Sleep(20 * time.Millisecond)
			if n := w.late.Load(); n > 0 {
				t.Errorf("%d reads after Apply returned", n)
			}
		})
	}
}

// TestGNULongNames: GNU-format long names and link names ('L'/'K' records).
func TestGNULongNames(t *testing.T) {
	requireRoot(t)
	long := strings.Repeat("gnu-long-directory-name/", 12) + "file"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, Size: 3, Format: tar.FormatGNU},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: long, Format: tar.FormatGNU},
		{Name: "hard", Typeflag: tar.TypeLink, Linkname: long, Format: tar.FormatGNU},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("gnu"))
		}
	}
	tw.Close()
	dir := t.TempDir()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(buf.Bytes()), Options{Mode: Direct}); err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(dir, long), "gnu")
	wantFile(t, filepath.Join(dir, "hard"), "gnu")
	if l, err := os.Readlink(filepath.Join(dir, "link")); err != nil || l != long {
		t.Errorf("link -> %q (%v), want %q", l, err, long)
	}
}

func TestBadOptions(t *testing.T) {
	requireRoot(t)
	tb := mkTar(t, file("f", "x", 0o644))
	ctx := context.Background()
	for name, o := range map[string]Options{
		"no mode":            {},
		"lowers with direct": {Mode: Direct, Lowers: []string{"/"}},
		"negative max size":  {Mode: Direct, MaxSize: -1},
		"bad diffID":         {Mode: Direct, DiffID: "sha256:nothex"},
	} {
		if _, err := Apply(ctx, t.TempDir(), bytes.NewReader(tb), o); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: Apply = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := Apply(ctx, filepath.Join(t.TempDir(), "missing"), bytes.NewReader(tb), Options{Mode: Direct}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("missing dir: Apply = %v, want ErrNotFound", err)
	}
}

// TestParallelOverlay applies several layers concurrently, as the unpacker
// does in overlay form.
func TestParallelOverlay(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var entries []ent
			for j := 0; j < 50; j++ {
				entries = append(entries, file(fmt.Sprintf("d%d/f%d", j%5, j), fmt.Sprintf("layer %d file %d", i, j), 0o644))
			}
			d := filepath.Join(base, fmt.Sprint(i))
			if err := os.Mkdir(d, 0o700); err != nil {
				errs[i] = err
				return
			}
			l := mkLayer(t, testimage.Gzip, entries...)
			res, err := Apply(context.Background(), d, bytes.NewReader(l.Blob), Options{Mode: OverlayForm, DiffID: l.DiffID})
			if err == nil && res.Entries != 50 {
				err = fmt.Errorf("entries = %d", res.Entries)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("layer %d: %v", i, err)
			continue
		}
		wantFile(t, filepath.Join(base, fmt.Sprint(i), "d3/f48"), fmt.Sprintf("layer %d file 48", i))
	}
}

func TestSyncDir(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(mkTar(t, file("f", "x", 0o644))), Options{Mode: Direct}); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(dir); err != nil {
		t.Errorf("SyncDir = %v", err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("SyncDir of a missing dir succeeded")
	}
}
