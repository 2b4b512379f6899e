// Package testsuite is the conformance suite for content.Store
// implementations, modelled on containerd's core/content/testsuite. Every
// implementation runs it from its own tests:
//
//	func TestSuite(t *testing.T) {
//		testsuite.Run(t, "local", func(t *testing.T) content.Store { ... })
//	}
//
// Each case gets a fresh, empty store from newStore and the cases run in
// parallel. The suite also exercises content.ReadBlob and content.WriteBlob.
package testsuite

import (
	"bytes"
	_ "crypto/sha256" // digest.FromBytes
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

// Run runs the conformance suite as subtests of t named name. newStore must
// return a new, empty store and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, name string, newStore func(t *testing.T) content.Store) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s content.Store)
	}{
		{"WriteCommitRead", testWriteCommitRead},
		{"CommitMismatch", testCommitMismatch},
		{"WriteBeyondTotal", testWriteBeyondTotal},
		{"Resume", testResume},
		{"Truncate", testTruncate},
		{"ConcurrentWriters", testConcurrentWriters},
		{"AlreadyExists", testAlreadyExists},
		{"InvalidWriterArguments", testInvalidWriterArguments},
		{"ConflictingIngest", testConflictingIngest},
		{"InfoUpdateWalkDelete", testInfoUpdateWalkDelete},
		{"StatusListAbort", testStatusListAbort},
		{"CommitRace", testCommitRace},
		{"WriteBlob", testWriteBlob},
		{"ReadBlob", testReadBlob},
	}
	t.Run(name, func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, newStore(t))
			})
		}
	})
}

// randomBytes returns n deterministic pseudo-random bytes, different per seed.
func randomBytes(n int, seed uint64) []byte {
	var key [32]byte
	copy(key[:], strconv.FormatUint(seed, 10))
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func mustIs(t *testing.T, err, class error, what string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("%s: got error %v, want one wrapping %q", what, err, class)
	}
}

func mustOK(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func openWriter(t *testing.T, s content.Store, ref string, dgst digest.Digest, total int64) content.Writer {
	t.Helper()
	w, err := s.Writer(t.Context(), content.WriterOpts{Ref: ref, Expected: dgst, Total: total})
	mustOK(t, err, "Writer("+ref+")")
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func writeChunks(t *testing.T, w io.Writer, b []byte, chunk int) {
	t.Helper()
	if chunk <= 0 {
		chunk = len(b) + 1
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		m, err := w.Write(b[:n])
		mustOK(t, err, "Write")
		if m != n {
			t.Fatalf("Write wrote %d of %d bytes without an error", m, n)
		}
		b = b[n:]
	}
}

func commitBlob(t *testing.T, s content.Store, ref string, b []byte, labels map[string]string) digest.Digest {
	t.Helper()
	dgst := digest.FromBytes(b)
	w := openWriter(t, s, ref, dgst, int64(len(b)))
	writeChunks(t, w, b, 0)
	mustOK(t, w.Commit(t.Context(), int64(len(b)), dgst, labels), "Commit")
	return dgst
}

// checkBlob asserts that dgst is committed with exactly the bytes want.
func checkBlob(t *testing.T, s content.Store, dgst digest.Digest, want []byte) {
	t.Helper()
	ctx := t.Context()
	info, err := s.Info(ctx, dgst)
	mustOK(t, err, "Info")
	if info.Digest != dgst || info.Size != int64(len(want)) {
		t.Fatalf("Info = %s %d bytes, want %s %d bytes", info.Digest, info.Size, dgst, len(want))
	}
	ra, err := s.ReaderAt(ctx, dgst)
	mustOK(t, err, "ReaderAt")
	defer ra.Close()
	if ra.Size() != int64(len(want)) {
		t.Fatalf("ReaderAt.Size() = %d, want %d", ra.Size(), len(want))
	}
	got, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	mustOK(t, err, "read blob")
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s: read %d bytes (digest %s) that differ from the %d written", dgst, len(got), digest.FromBytes(got), len(want))
	}
}

// checkNoBlob asserts that dgst is not committed, by every reading method.
func checkNoBlob(t *testing.T, s content.Store, dgst digest.Digest) {
	t.Helper()
	_, err := s.Info(t.Context(), dgst)
	mustIs(t, err, errdefs.ErrNotFound, "Info of an uncommitted blob")
	_, err = s.ReaderAt(t.Context(), dgst)
	mustIs(t, err, errdefs.ErrNotFound, "ReaderAt of an uncommitted blob")
	_ = s.Walk(t.Context(), func(info content.Info) error {
		if info.Digest == dgst {
			t.Errorf("Walk visits %s, which should not be committed", dgst)
		}
		return nil
	})
}

func checkNoIngests(t *testing.T, s content.Store) {
	t.Helper()
	sts, err := s.ListStatuses(t.Context())
	mustOK(t, err, "ListStatuses")
	if len(sts) != 0 {
		t.Fatalf("ListStatuses = %+v, want no active ingests", sts)
	}
}

func checkTimeNear(t *testing.T, what string, got, before, after time.Time) {
	t.Helper()
	const slack = 2 * time.Second // coarse filesystem timestamps
	if got.Before(before.Add(-slack)) || got.After(after.Add(slack)) {
		t.Errorf("%s = %v, want between %v and %v", what, got, before, after)
	}
}

func testWriteCommitRead(t *testing.T, s content.Store) {
	for i, tc := range []struct {
		name      string
		size      int
		chunk     int
		knowTotal bool
	}{
		{name: "empty blob", size: 0, knowTotal: true},
		{name: "one byte", size: 1, knowTotal: true},
		{name: "single write", size: 4096, knowTotal: true},
		{name: "many writes over 1MiB", size: 3<<20 + 17, chunk: 64 << 10, knowTotal: true},
		{name: "unknown total", size: 100_000, chunk: 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			b := randomBytes(tc.size, uint64(i))
			dgst := digest.FromBytes(b)
			var total int64
			if tc.knowTotal {
				total = int64(len(b))
			}
			before := time.Now()
			w := openWriter(t, s, "ref-"+tc.name, dgst, total)
			st, err := w.Status()
			mustOK(t, err, "Status")
			if st.Ref != "ref-"+tc.name || st.Offset != 0 || st.Total != total || st.Expected != dgst {
				t.Fatalf("new writer Status = %+v, want ref %q offset 0 total %d expected %s", st, "ref-"+tc.name, total, dgst)
			}
			writeChunks(t, w, b, tc.chunk)
			if got := w.Digest(); got != dgst {
				t.Fatalf("Digest() = %s after writing, want %s", got, dgst)
			}
			if st, err = w.Status(); err != nil || st.Offset != int64(len(b)) {
				t.Fatalf("Status() = %+v, %v; want offset %d", st, err, len(b))
			}
			labels := map[string]string{"case": tc.name}
			mustOK(t, w.Commit(ctx, int64(len(b)), dgst, labels), "Commit")
			after := time.Now()

			checkBlob(t, s, dgst, b)
			info, err := s.Info(ctx, dgst)
			mustOK(t, err, "Info")
			if !maps.Equal(info.Labels, labels) {
				t.Errorf("Info.Labels = %v, want %v", info.Labels, labels)
			}
			checkTimeNear(t, "CreatedAt", info.CreatedAt, before, after)
			if info.UpdatedAt.Before(info.CreatedAt) {
				t.Errorf("UpdatedAt %v before CreatedAt %v", info.UpdatedAt, info.CreatedAt)
			}
			_, err = s.Status(ctx, "ref-"+tc.name)
			mustIs(t, err, errdefs.ErrNotFound, "Status of a committed ingest")
		})
	}
	checkNoIngests(t, s)
}

func testCommitMismatch(t *testing.T, s content.Store) {
	b := randomBytes(10_000, 1)
	dgst := digest.FromBytes(b)
	other := digest.FromBytes(randomBytes(10_000, 2))
	for _, tc := range []struct {
		name     string
		write    []byte
		total    int64
		size     int64
		expected digest.Digest
		// The error message must name these (expected and actual).
		mention []string
	}{
		{name: "wrong digest", write: b, total: int64(len(b)), size: int64(len(b)), expected: other,
			mention: []string{other.String(), dgst.String()}},
		{name: "size too small", write: b, size: int64(len(b)) - 1, expected: dgst,
			mention: []string{strconv.Itoa(len(b) - 1), strconv.Itoa(len(b))}},
		{name: "size too large", write: b, size: int64(len(b)) + 1, expected: dgst,
			mention: []string{strconv.Itoa(len(b) + 1), strconv.Itoa(len(b))}},
		{name: "short of writer total", write: b[:100], total: int64(len(b)), expected: dgst,
			mention: []string{strconv.Itoa(len(b)), "100"}},
		{name: "wrong digest from writer opts", write: b[:100], expected: "",
			mention: []string{dgst.String(), digest.FromBytes(b[:100]).String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			ref := "mismatch-" + tc.name
			w := openWriter(t, s, ref, dgst, tc.total)
			writeChunks(t, w, tc.write, 0)
			err := w.Commit(ctx, tc.size, tc.expected, nil)
			mustIs(t, err, errdefs.ErrDataLoss, "Commit")
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Commit error %q does not mention %q", err, m)
				}
			}
			checkNoBlob(t, s, dgst)
			checkNoBlob(t, s, other)
			_, err = s.Status(ctx, ref)
			mustIs(t, err, errdefs.ErrNotFound, "Status after a failed commit")

			// Commit closed the writer, and a retry starts from zero.
			w2 := openWriter(t, s, ref, dgst, 0)
			st, err := w2.Status()
			mustOK(t, err, "Status")
			if st.Offset != 0 {
				t.Fatalf("retry after a failed commit starts at %d, want 0", st.Offset)
			}
			mustOK(t, w2.Close(), "Close")
			mustOK(t, s.Abort(ctx, ref), "Abort")
		})
	}
	checkNoIngests(t, s)
}

func testWriteBeyondTotal(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(100, 3)
	dgst := digest.FromBytes(b)
	w := openWriter(t, s, "beyond", dgst, int64(len(b)))
	writeChunks(t, w, b[:60], 0)
	_, err := w.Write(append(slices.Clone(b[60:]), 'x'))
	mustIs(t, err, errdefs.ErrDataLoss, "Write beyond total")
	st, err := w.Status()
	mustOK(t, err, "Status")
	if st.Offset > int64(len(b)) {
		t.Fatalf("after an overlong write, offset %d exceeds total %d", st.Offset, len(b))
	}
	mustOK(t, w.Truncate(0), "Truncate")
	writeChunks(t, w, b, 7)
	mustOK(t, w.Commit(ctx, int64(len(b)), dgst, nil), "Commit")
	checkBlob(t, s, dgst, b)
}

func testResume(t *testing.T, s content.Store) {
	b := randomBytes(3<<20+5, 4)
	dgst := digest.FromBytes(b)
	for _, tc := range []struct {
		name        string
		split       int
		resumeTotal int64 // Total given to the resuming writer
	}{
		{name: "mid buffer", split: 1000, resumeTotal: int64(len(b))},
		{name: "at 1MiB", split: 1 << 20, resumeTotal: int64(len(b))},
		{name: "nothing written", split: 0, resumeTotal: int64(len(b))},
		{name: "everything written", split: len(b), resumeTotal: int64(len(b))},
		{name: "total unknown on resume", split: 12345, resumeTotal: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			ref := "resume-" + tc.name
			w := openWriter(t, s, ref, dgst, int64(len(b)))
			writeChunks(t, w, b[:tc.split], 1<<16)
			mustOK(t, w.Close(), "Close")

			st, err := s.Status(ctx, ref)
			mustOK(t, err, "Status after Close")
			if st.Offset != int64(tc.split) || st.Ref != ref || st.Expected != dgst {
				t.Fatalf("Status after Close = %+v, want ref %q offset %d expected %s", st, ref, tc.split, dgst)
			}

			w2 := openWriter(t, s, ref, dgst, tc.resumeTotal)
			st, err = w2.Status()
			mustOK(t, err, "resumed Status")
			if st.Offset != int64(tc.split) {
				t.Fatalf("resumed writer offset = %d, want %d", st.Offset, tc.split)
			}
			if st.Total != int64(len(b)) {
				t.Errorf("resumed writer total = %d, want the original %d", st.Total, len(b))
			}
			if got, want := w2.Digest(), digest.FromBytes(b[:tc.split]); got != want {
				t.Fatalf("resumed Digest() = %s, want %s (digest of the first %d bytes)", got, want, tc.split)
			}
			writeChunks(t, w2, b[tc.split:], 1<<16)
			mustOK(t, w2.Commit(ctx, int64(len(b)), dgst, nil), "Commit")
			checkBlob(t, s, dgst, b)
			mustOK(t, s.Delete(ctx, dgst), "Delete")
		})
	}
	checkNoIngests(t, s)
}

func testTruncate(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(50_000, 5)
	dgst := digest.FromBytes(b)
	junk := randomBytes(20_000, 6)
	empty := digest.FromBytes(nil)

	for _, tc := range []struct {
		name   string
		resume bool // close and reopen before truncating
	}{
		{name: "same writer"},
		{name: "resumed writer", resume: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := "truncate-" + tc.name
			w := openWriter(t, s, ref, dgst, int64(len(b)))
			writeChunks(t, w, junk, 0)
			if tc.resume {
				mustOK(t, w.Close(), "Close")
				w = openWriter(t, s, ref, dgst, int64(len(b)))
			}
			if err := w.Truncate(5); err == nil {
				t.Errorf("Truncate(5) succeeded; only 0 is supported")
			}
			mustOK(t, w.Truncate(0), "Truncate(0)")
			st, err := w.Status()
			mustOK(t, err, "Status")
			if st.Offset != 0 {
				t.Fatalf("offset after Truncate(0) = %d, want 0", st.Offset)
			}
			if got := w.Digest(); got != empty {
				t.Fatalf("Digest() after Truncate(0) = %s, want %s", got, empty)
			}
			writeChunks(t, w, b, 4096)
			mustOK(t, w.Commit(ctx, int64(len(b)), dgst, nil), "Commit")
			checkBlob(t, s, dgst, b)
			mustOK(t, s.Delete(ctx, dgst), "Delete")
		})
	}
}

func testConcurrentWriters(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(1000, 7)
	dgst := digest.FromBytes(b)

	w := openWriter(t, s, "held", dgst, int64(len(b)))
	writeChunks(t, w, b[:300], 0)
	start := time.Now()
	_, err := s.Writer(ctx, content.WriterOpts{Ref: "held", Expected: dgst})
	mustIs(t, err, errdefs.ErrUnavailable, "second Writer on a held ref")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Writer took %v to fail; it must not wait for the holder", d)
	}
	mustOK(t, w.Close(), "Close")
	w2 := openWriter(t, s, "held", dgst, int64(len(b)))
	if st, err := w2.Status(); err != nil || st.Offset != 300 {
		t.Fatalf("writer after the holder closed: Status = %+v, %v; want offset 300", st, err)
	}
	mustOK(t, w2.Close(), "Close")

	// Many at once on a fresh ref: exactly one wins.
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []content.Writer
		errs    []error
		startc  = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-startc
			w, err := s.Writer(ctx, content.WriterOpts{Ref: "contended", Expected: dgst})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, w)
			} else {
				errs = append(errs, err)
			}
		})
	}
	close(startc)
	wg.Wait()
	for _, w := range winners {
		t.Cleanup(func() { _ = w.Close() })
	}
	if len(winners) != 1 {
		t.Fatalf("%d of %d concurrent writers on one ref succeeded, want exactly 1 (errors: %v)", len(winners), n, errs)
	}
	for _, err := range errs {
		mustIs(t, err, errdefs.ErrUnavailable, "losing concurrent Writer")
	}
	writeChunks(t, winners[0], b, 0)
	mustOK(t, winners[0].Commit(ctx, int64(len(b)), dgst, nil), "Commit by the winner")
	checkBlob(t, s, dgst, b)
}

func testAlreadyExists(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(2000, 8)
	dgst := commitBlob(t, s, "exists", b, map[string]string{"keep": "me"})
	for _, ref := range []string{"exists", "another-ref", dgst.String()} {
		_, err := s.Writer(ctx, content.WriterOpts{Ref: ref, Expected: dgst, Total: int64(len(b))})
		mustIs(t, err, errdefs.ErrAlreadyExists, "Writer("+ref+") for a committed digest")
	}
	checkBlob(t, s, dgst, b)
	info, err := s.Info(ctx, dgst)
	mustOK(t, err, "Info")
	if info.Labels["keep"] != "me" {
		t.Errorf("labels after rejected writers = %v, want keep=me", info.Labels)
	}
	checkNoIngests(t, s)
}

func testInvalidWriterArguments(t *testing.T, s content.Store) {
	good := digest.FromString("x")
	for _, tc := range []struct {
		name string
		opts content.WriterOpts
	}{
		{name: "empty ref", opts: content.WriterOpts{Expected: good}},
		{name: "missing digest", opts: content.WriterOpts{Ref: "r"}},
		{name: "digest without algorithm", opts: content.WriterOpts{Ref: "r", Expected: digest.Digest(good.Encoded())}},
		{name: "short hex", opts: content.WriterOpts{Ref: "r", Expected: "sha256:abc"}},
		{name: "uppercase hex", opts: content.WriterOpts{Ref: "r", Expected: digest.Digest("sha256:" + strings.ToUpper(good.Encoded()))}},
		{name: "path in digest", opts: content.WriterOpts{Ref: "r", Expected: "sha256:../../../../etc/passwd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Writer(t.Context(), tc.opts)
			mustIs(t, err, errdefs.ErrInvalidArgument, "Writer")
		})
	}
	checkNoIngests(t, s)
}

func testConflictingIngest(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(100, 9)
	dgst := digest.FromBytes(b)
	w := openWriter(t, s, "conflict", dgst, int64(len(b)))
	writeChunks(t, w, b[:10], 0)
	mustOK(t, w.Close(), "Close")

	_, err := s.Writer(ctx, content.WriterOpts{Ref: "conflict", Expected: digest.FromString("other"), Total: int64(len(b))})
	mustIs(t, err, errdefs.ErrFailedPrecondition, "Writer with another digest on an existing ingest")
	_, err = s.Writer(ctx, content.WriterOpts{Ref: "conflict", Expected: dgst, Total: int64(len(b)) + 1})
	mustIs(t, err, errdefs.ErrFailedPrecondition, "Writer with another total on an existing ingest")

	// The conflicting attempts did not disturb the ingest or its lock.
	w = openWriter(t, s, "conflict", dgst, int64(len(b)))
	if st, err := w.Status(); err != nil || st.Offset != 10 {
		t.Fatalf("Status = %+v, %v; want offset 10", st, err)
	}
	writeChunks(t, w, b[10:], 0)
	mustOK(t, w.Commit(ctx, 0, "", nil), "Commit")
	checkBlob(t, s, dgst, b)
}

func testInfoUpdateWalkDelete(t *testing.T, s content.Store) {
	ctx := t.Context()
	blobs := map[digest.Digest][]byte{}
	labels := map[digest.Digest]map[string]string{}
	for i, l := range []map[string]string{
		{"a": "1", "stevedore.io/gc.ref": "x"},
		nil,
		{"c": ""},
	} {
		b := randomBytes(1000+i, 100+uint64(i))
		d := commitBlob(t, s, "blob-"+strconv.Itoa(i), b, l)
		blobs[d], labels[d] = b, l
	}

	walked := map[digest.Digest]content.Info{}
	mustOK(t, s.Walk(ctx, func(info content.Info) error {
		if _, dup := walked[info.Digest]; dup {
			t.Errorf("Walk visited %s twice", info.Digest)
		}
		walked[info.Digest] = info
		return nil
	}), "Walk")
	if len(walked) != len(blobs) {
		t.Fatalf("Walk visited %d blobs, want %d", len(walked), len(blobs))
	}
	for d, b := range blobs {
		info, ok := walked[d]
		if !ok {
			t.Fatalf("Walk did not visit %s", d)
		}
		if info.Size != int64(len(b)) || !maps.Equal(info.Labels, labels[d]) {
			t.Errorf("Walk info %s = size %d labels %v, want size %d labels %v", d, info.Size, info.Labels, len(b), labels[d])
		}
		got, err := s.Info(ctx, d)
		mustOK(t, err, "Info")
		if got.Size != info.Size || !maps.Equal(got.Labels, labels[d]) || got.CreatedAt.IsZero() {
			t.Errorf("Info %s = %+v, want size %d labels %v and a creation time", d, got, len(b), labels[d])
		}
	}

	stop := errors.New("stop here")
	calls := 0
	err := s.Walk(ctx, func(content.Info) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Walk with a failing fn: err %v after %d calls, want %v after 1", err, calls, stop)
	}

	// Update replaces labels, it does not merge them.
	var first digest.Digest
	for d := range labels {
		if labels[d]["a"] == "1" {
			first = d
		}
	}
	before, err := s.Info(ctx, first)
	mustOK(t, err, "Info")
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{name: "replace", labels: map[string]string{"x": "y"}},
		{name: "add", labels: map[string]string{"x": "y", "z": "w"}},
		{name: "clear", labels: nil},
	} {
		t.Run("Update "+tc.name, func(t *testing.T) {
			got, err := s.Update(ctx, content.Info{Digest: first, Labels: tc.labels, Size: 1})
			mustOK(t, err, "Update")
			if !maps.Equal(got.Labels, tc.labels) || got.Size != before.Size {
				t.Fatalf("Update returned labels %v size %d, want labels %v size %d", got.Labels, got.Size, tc.labels, before.Size)
			}
			info, err := s.Info(ctx, first)
			mustOK(t, err, "Info")
			if !maps.Equal(info.Labels, tc.labels) {
				t.Fatalf("Info after Update: labels %v, want %v", info.Labels, tc.labels)
			}
			if info.UpdatedAt.Before(before.UpdatedAt) || !info.CreatedAt.Equal(before.CreatedAt) {
				t.Errorf("after Update CreatedAt %v UpdatedAt %v; before CreatedAt %v UpdatedAt %v",
					info.CreatedAt, info.UpdatedAt, before.CreatedAt, before.UpdatedAt)
			}
		})
	}
	missing := digest.FromString("never committed")
	_, err = s.Update(ctx, content.Info{Digest: missing, Labels: map[string]string{"a": "b"}})
	mustIs(t, err, errdefs.ErrNotFound, "Update of a missing blob")
	checkNoBlob(t, s, missing)

	// Delete, and labels do not outlive their blob.
	_, err = s.Update(ctx, content.Info{Digest: first, Labels: map[string]string{"old": "label"}})
	mustOK(t, err, "Update")
	mustOK(t, s.Delete(ctx, first), "Delete")
	checkNoBlob(t, s, first)
	mustIs(t, s.Delete(ctx, first), errdefs.ErrNotFound, "second Delete")
	mustIs(t, s.Delete(ctx, missing), errdefs.ErrNotFound, "Delete of a missing blob")
	_, err = s.Update(ctx, content.Info{Digest: first})
	mustIs(t, err, errdefs.ErrNotFound, "Update of a deleted blob")
	count := 0
	mustOK(t, s.Walk(ctx, func(content.Info) error { count++; return nil }), "Walk")
	if count != len(blobs)-1 {
		t.Errorf("Walk after Delete visited %d blobs, want %d", count, len(blobs)-1)
	}

	commitBlob(t, s, "again", blobs[first], nil)
	info, err := s.Info(ctx, first)
	mustOK(t, err, "Info")
	if len(info.Labels) != 0 {
		t.Errorf("blob deleted with labels and recommitted without: labels %v, want none", info.Labels)
	}
	checkBlob(t, s, first, blobs[first])
}

func testStatusListAbort(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(100, 10)
	dgst := digest.FromBytes(b)
	other := digest.FromString("other")

	before := time.Now()
	w1 := openWriter(t, s, "r1", dgst, int64(len(b)))
	writeChunks(t, w1, b[:10], 0)
	w2 := openWriter(t, s, "r2", other, 0)
	after := time.Now()

	st, err := s.Status(ctx, "r1")
	mustOK(t, err, "Status(r1)")
	if st.Ref != "r1" || st.Offset != 10 || st.Total != int64(len(b)) || st.Expected != dgst {
		t.Errorf("Status(r1) = %+v, want ref r1 offset 10 total %d expected %s", st, len(b), dgst)
	}
	checkTimeNear(t, "StartedAt", st.StartedAt, before, after)
	if st.UpdatedAt.Before(st.StartedAt) {
		t.Errorf("UpdatedAt %v before StartedAt %v", st.UpdatedAt, st.StartedAt)
	}
	_, err = s.Status(ctx, "nope")
	mustIs(t, err, errdefs.ErrNotFound, "Status of a missing ingest")

	sts, err := s.ListStatuses(ctx)
	mustOK(t, err, "ListStatuses")
	got := map[string]int64{}
	for _, st := range sts {
		got[st.Ref] = st.Offset
	}
	if want := map[string]int64{"r1": 10, "r2": 0}; !maps.Equal(got, want) {
		t.Fatalf("ListStatuses offsets = %v, want %v", got, want)
	}

	mustIs(t, s.Abort(ctx, "r1"), errdefs.ErrUnavailable, "Abort of a held ingest")
	if _, err := s.Status(ctx, "r1"); err != nil {
		t.Fatalf("Status after a refused Abort: %v", err)
	}
	mustOK(t, w1.Close(), "Close")
	mustOK(t, s.Abort(ctx, "r1"), "Abort")
	_, err = s.Status(ctx, "r1")
	mustIs(t, err, errdefs.ErrNotFound, "Status after Abort")
	mustIs(t, s.Abort(ctx, "r1"), errdefs.ErrNotFound, "second Abort")
	mustIs(t, s.Abort(ctx, "never"), errdefs.ErrNotFound, "Abort of a missing ingest")

	sts, err = s.ListStatuses(ctx)
	mustOK(t, err, "ListStatuses")
	if len(sts) != 1 || sts[0].Ref != "r2" {
		t.Fatalf("ListStatuses after Abort = %+v, want only r2", sts)
	}
	w1 = openWriter(t, s, "r1", dgst, int64(len(b)))
	if st, err := w1.Status(); err != nil || st.Offset != 0 {
		t.Fatalf("Writer after Abort: Status = %+v, %v; want offset 0", st, err)
	}
	mustOK(t, w1.Close(), "Close")
	mustOK(t, w2.Close(), "Close")
	mustOK(t, s.Abort(ctx, "r1"), "Abort")
	mustOK(t, s.Abort(ctx, "r2"), "Abort")
	checkNoIngests(t, s)
	checkNoBlob(t, s, dgst)
}

func testCommitRace(t *testing.T, s content.Store) {
	ctx := t.Context()
	for round := range 5 {
		b := randomBytes(200_000, 200+uint64(round))
		dgst := digest.FromBytes(b)
		const n = 2
		ws := make([]content.Writer, n)
		for i := range ws {
			ws[i] = openWriter(t, s, fmt.Sprintf("race-%d-%d", round, i), dgst, int64(len(b)))
			writeChunks(t, ws[i], b, 1<<16)
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		startc := make(chan struct{})
		for i, w := range ws {
			wg.Go(func() {
				<-startc
				errs[i] = w.Commit(ctx, int64(len(b)), dgst, map[string]string{"winner": strconv.Itoa(i)})
			})
		}
		close(startc)
		wg.Wait()

		ok, exists := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, errdefs.ErrAlreadyExists):
				exists++
			default:
				t.Fatalf("round %d: racing Commit: %v", round, err)
			}
		}
		if ok != 1 || exists != n-1 {
			t.Fatalf("round %d: racing commits: %d succeeded, %d already existed; want 1 and %d (errors %v)", round, ok, exists, n-1, errs)
		}
		checkBlob(t, s, dgst, b)
		info, err := s.Info(ctx, dgst)
		mustOK(t, err, "Info")
		winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
		if info.Labels["winner"] != strconv.Itoa(winner) {
			t.Errorf("round %d: labels %v, want those of the winning commit %d", round, info.Labels, winner)
		}
	}
	checkNoIngests(t, s)
}

// seekCounter is a seekable reader (and nothing more, so copies go through
// Read) that counts the bytes read from it.
type seekCounter struct {
	r    *bytes.Reader
	read int
}

func (c *seekCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}

func (c *seekCounter) Seek(off int64, whence int) (int64, error) { return c.r.Seek(off, whence) }

// onlyReader hides every method but Read.
type onlyReader struct{ io.Reader }

func testWriteBlob(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(2<<20+3, 11)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(b), Size: int64(len(b))}
	half := len(b) / 2

	t.Run("resume with a seeker skips", func(t *testing.T) {
		w := openWriter(t, s, "wb-seek", desc.Digest, desc.Size)
		writeChunks(t, w, b[:half], 0)
		mustOK(t, w.Close(), "Close")
		r := &seekCounter{r: bytes.NewReader(b)}
		mustOK(t, content.WriteBlob(ctx, s, "wb-seek", r, desc, map[string]string{"via": "seek"}), "WriteBlob")
		if r.read != len(b)-half {
			t.Errorf("WriteBlob read %d bytes, want %d (the part not yet written)", r.read, len(b)-half)
		}
		checkBlob(t, s, desc.Digest, b)
		info, err := s.Info(ctx, desc.Digest)
		mustOK(t, err, "Info")
		if info.Labels["via"] != "seek" {
			t.Errorf("labels = %v, want via=seek", info.Labels)
		}
		mustOK(t, content.WriteBlob(ctx, s, "wb-seek", onlyReader{bytes.NewReader(b)}, desc, nil), "WriteBlob of a committed blob")
		mustOK(t, s.Delete(ctx, desc.Digest), "Delete")
	})

	t.Run("resume without a seeker restarts", func(t *testing.T) {
		// The ingest holds junk; only a restart from zero can commit.
		w := openWriter(t, s, "wb-plain", desc.Digest, desc.Size)
		writeChunks(t, w, randomBytes(half, 12), 0)
		mustOK(t, w.Close(), "Close")
		mustOK(t, content.WriteBlob(ctx, s, "wb-plain", onlyReader{bytes.NewReader(b)}, desc, nil), "WriteBlob")
		checkBlob(t, s, desc.Digest, b)
		mustOK(t, s.Delete(ctx, desc.Digest), "Delete")
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{name: "too long", data: append(slices.Clone(b), 0)},
			{name: "too short", data: b[:len(b)-1]},
			{name: "wrong bytes", data: randomBytes(len(b), 13)},
		} {
			err := content.WriteBlob(ctx, s, "wb-bad-"+tc.name, bytes.NewReader(tc.data), desc, nil)
			mustIs(t, err, errdefs.ErrDataLoss, "WriteBlob "+tc.name)
			checkNoBlob(t, s, desc.Digest)
			_ = s.Abort(ctx, "wb-bad-"+tc.name)
		}
	})
	checkNoIngests(t, s)
}

func testReadBlob(t *testing.T, s content.Store) {
	ctx := t.Context()
	b := randomBytes(5000, 14)
	dgst := commitBlob(t, s, "rb", b, nil)
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: dgst, Size: int64(len(b))}

	got, err := content.ReadBlob(ctx, s, desc, int64(len(b)))
	mustOK(t, err, "ReadBlob")
	if !bytes.Equal(got, b) {
		t.Fatalf("ReadBlob returned %d bytes that differ from the %d committed", len(got), len(b))
	}
	for _, tc := range []struct {
		name string
		desc ocispec.Descriptor
		max  int64
		want error
	}{
		{name: "over max", desc: desc, max: int64(len(b)) - 1, want: errdefs.ErrResourceExhausted},
		{name: "stored blob over max", desc: ocispec.Descriptor{Digest: dgst, Size: 10}, max: 100, want: errdefs.ErrResourceExhausted},
		{name: "size mismatch", desc: ocispec.Descriptor{Digest: dgst, Size: int64(len(b)) + 1}, max: 1 << 20, want: errdefs.ErrDataLoss},
		{name: "missing", desc: ocispec.Descriptor{Digest: digest.FromString("missing"), Size: 7}, max: 1 << 20, want: errdefs.ErrNotFound},
		{name: "zero max", desc: desc, max: 0, want: errdefs.ErrInvalidArgument},
		{name: "malformed digest", desc: ocispec.Descriptor{Digest: "sha256:zz", Size: 1}, max: 10, want: errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := content.ReadBlob(ctx, s, tc.desc, tc.max)
			mustIs(t, err, tc.want, "ReadBlob")
			if got != nil {
				t.Errorf("ReadBlob returned %d bytes along with an error", len(got))
			}
		})
	}
}
