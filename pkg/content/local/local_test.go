package local

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/content/testsuite"
	"github.com/stevedore/stevedore/pkg/errdefs"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestSuite(t *testing.T) {
	testsuite.Run(t, "local", func(t *testing.T) content.Store { return newStore(t) })
}

// The cross-process test's child holds a writer on heldRef after writing
// heldOffset bytes of heldBlob, then sleeps until it is killed.
const (
	helperEnv  = "STEVEDORE_TEST_CONTENT_HOLD_WRITER"
	heldRef    = "cross-process"
	heldOffset = 700_001
)

func heldBlob() []byte { return bytes.Repeat([]byte("stevedore cross-process "), 100_000) }

// TestHelperHoldWriter is not a test: TestCrossProcessLock runs the test
// binary again to execute it in a child process.
func TestHelperHoldWriter(t *testing.T) {
	root := os.Getenv(helperEnv)
	if root == "" {
		t.Skip("helper process for TestCrossProcessLock")
	}
	s, err := New(root)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	b := heldBlob()
	w, err := s.Writer(t.Context(), content.WriterOpts{Ref: heldRef, Expected: digest.FromBytes(b), Total: int64(len(b))})
	if err != nil {
		t.Fatalf("Writer: %v", err)
	}
	if _, err := w.Write(b[:heldOffset]); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		t.Fatalf("signal readiness: %v", err)
	}
	time.Sleep(time.Minute) // until SIGKILLed
	t.Fatal("helper was not killed")
}

func TestCrossProcessLock(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	b := heldBlob()
	dgst := digest.FromBytes(b)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldWriter$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+root)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		ready <- errors.New("helper exited without getting ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			_ = cmd.Wait()
			waited = true
			t.Fatalf("%v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("helper not ready after 15s; stderr:\n%s", stderr.String())
	}

	s := newStoreAt(t, root)
	_, err = s.Writer(ctx, content.WriterOpts{Ref: heldRef, Expected: dgst, Total: int64(len(b))})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Writer on a ref held by another process: %v, want ErrUnavailable", err)
	}
	if err := s.Abort(ctx, heldRef); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Abort of a ref held by another process: %v, want ErrUnavailable", err)
	}
	if st, err := s.Status(ctx, heldRef); err != nil || st.Offset != heldOffset {
		t.Fatalf("Status of the held ingest = %+v, %v; want offset %d", st, err, heldOffset)
	}
	// New's cleanup must leave a held ingest alone.
	if _, err := New(root); err != nil {
		t.Fatalf("New: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill helper: %v", err)
	}
	_ = cmd.Wait()
	waited = true

	w, err := s.Writer(ctx, content.WriterOpts{Ref: heldRef, Expected: dgst, Total: int64(len(b))})
	if err != nil {
		t.Fatalf("Writer after the holder was killed: %v", err)
	}
	defer w.Close()
	st, err := w.Status()
	if err != nil || st.Offset != heldOffset {
		t.Fatalf("resumed Status = %+v, %v; want offset %d", st, err, heldOffset)
	}
	if got, want := w.Digest(), digest.FromBytes(b[:heldOffset]); got != want {
		t.Fatalf("resumed Digest() = %s, want %s", got, want)
	}
	if _, err := w.Write(b[heldOffset:]); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Commit(ctx, int64(len(b)), dgst, nil); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	checkCommitted(t, s, dgst, b)
}

func newStoreAt(t *testing.T, root string) *Store {
	t.Helper()
	s, err := New(root)
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	return s
}

func checkCommitted(t *testing.T, s *Store, dgst digest.Digest, want []byte) {
	t.Helper()
	got, err := os.ReadFile(s.blobPath(dgst))
	if err != nil {
		t.Fatalf("read blob: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("blob %s holds %d bytes hashing to %s, want %d bytes", dgst, len(got), digest.FromBytes(got), len(want))
	}
	fi, err := os.Stat(s.blobPath(dgst))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o444 {
		t.Errorf("blob mode %v, want read-only 0444", perm)
	}
}

// checkBlobsVerified asserts that everything under blobs/ is a complete blob
// hashing to its name.
func checkBlobsVerified(t *testing.T, s *Store) {
	t.Helper()
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.blobDir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(b).Encoded(); got != e.Name() {
			t.Errorf("blobs/sha256/%s holds bytes hashing to %s", e.Name(), got)
		}
	}
}

// writeAndClose leaves an ingest of ref holding b[:n], as a crashed writer
// would.
func writeAndClose(t *testing.T, s *Store, ref string, b []byte, n int) {
	t.Helper()
	w, err := s.Writer(t.Context(), content.WriterOpts{Ref: ref, Expected: digest.FromBytes(b), Total: int64(len(b))})
	if err != nil {
		t.Fatalf("Writer: %v", err)
	}
	if _, err := w.Write(b[:n]); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestCrashLeftovers(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	s := newStoreAt(t, root)
	b := bytes.Repeat([]byte("leftover "), 300_000)
	dgst := digest.FromBytes(b)
	done := bytes.Repeat([]byte("committed but ingest not removed "), 1000)
	doneDgst := digest.FromBytes(done)

	// An interrupted download, and one whose commit stopped after chmod.
	writeAndClose(t, s, "interrupted", b, 1_000_000)
	writeAndClose(t, s, "mid-commit", b, len(b))
	if err := os.Chmod(filepath.Join(s.ingestDir("mid-commit"), dataFile), 0o444); err != nil {
		t.Fatal(err)
	}
	// A commit that stopped after the rename into blobs/.
	writeAndClose(t, s, "renamed", done, len(done))
	if err := os.Rename(filepath.Join(s.ingestDir("renamed"), dataFile), s.blobPath(doneDgst)); err != nil {
		t.Fatal(err)
	}
	// An ingest that was never initialised, and a half-removed one.
	half := filepath.Join(s.ingestRoot(), "0000")
	if err := os.MkdirAll(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, lockFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	trash := filepath.Join(s.trashDir(), "ingest-1", "ingest")
	if err := os.MkdirAll(trash, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trash, dataFile), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Restart.
	s = newStoreAt(t, root)
	sts, err := s.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, st := range sts {
		got[st.Ref] = st.Offset
	}
	if len(got) != 2 || got["interrupted"] != 1_000_000 || got["mid-commit"] != int64(len(b)) {
		t.Fatalf("ListStatuses after restart = %v, want interrupted:1000000 and mid-commit:%d", got, len(b))
	}
	for _, gone := range []string{half, s.ingestDir("renamed"), filepath.Join(s.trashDir(), "ingest-1")} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived New: %v", gone, err)
		}
	}
	checkBlobsVerified(t, s)
	if _, err := s.Info(ctx, doneDgst); err != nil {
		t.Errorf("Info of the blob whose commit did not finish removing its ingest: %v", err)
	}

	w, err := s.Writer(ctx, content.WriterOpts{Ref: "mid-commit", Expected: dgst, Total: int64(len(b))})
	if err != nil {
		t.Fatalf("resume mid-commit: %v", err)
	}
	if got := w.Digest(); got != dgst {
		t.Fatalf("resumed complete ingest: Digest() = %s, want %s", got, dgst)
	}
	if err := w.Commit(ctx, 0, "", nil); err != nil {
		t.Fatalf("Commit of the resumed complete ingest: %v", err)
	}
	checkCommitted(t, s, dgst, b)

	// The interrupted ingest now loses the commit race: already exists.
	_, err = s.Writer(ctx, content.WriterOpts{Ref: "interrupted", Expected: dgst})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("Writer for a committed digest: %v, want ErrAlreadyExists", err)
	}
	if err := s.Abort(ctx, "interrupted"); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	sts, err = s.ListStatuses(ctx)
	if err != nil || len(sts) != 0 {
		t.Fatalf("ListStatuses = %+v, %v; want none", sts, err)
	}
	entries, err := os.ReadDir(s.trashDir())
	if err != nil || len(entries) != 0 {
		t.Errorf("trash holds %d entries (%v), want none", len(entries), err)
	}
}

func TestDamagedIngestMetadataRestarts(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	b := bytes.Repeat([]byte("x"), 1000)
	writeAndClose(t, s, "damaged", b, 500)
	if err := os.WriteFile(filepath.Join(s.ingestDir("damaged"), totalFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Status(ctx, "damaged"); err == nil {
		t.Fatal("Status of an ingest with damaged metadata succeeded")
	}
	w, err := s.Writer(ctx, content.WriterOpts{Ref: "damaged", Expected: digest.FromBytes(b), Total: int64(len(b))})
	if err != nil {
		t.Fatalf("Writer on a damaged ingest: %v", err)
	}
	if st, err := w.Status(); err != nil || st.Offset != 0 {
		t.Fatalf("damaged ingest: Status = %+v, %v; want a restart at 0", st, err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, int64(len(b)), digest.FromBytes(b), nil); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	checkCommitted(t, s, digest.FromBytes(b), b)
}

func TestDigestValidation(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	sha512 := digest.Digest("sha512:" + strings.Repeat("ab", 64))
	for _, tc := range []struct {
		name    string
		dgst    digest.Digest
		mention string
	}{
		{name: "sha512", dgst: sha512, mention: "sha256"},
		{name: "unknown algorithm", dgst: "md5:d41d8cd98f00b204e9800998ecf8427e", mention: "md5"},
		{name: "traversal", dgst: "sha256:../../etc/passwd", mention: "invalid"},
		{name: "empty", dgst: "", mention: "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := []struct {
				op  string
				err error
			}{
				{"Info", func() error { _, err := s.Info(ctx, tc.dgst); return err }()},
				{"ReaderAt", func() error { _, err := s.ReaderAt(ctx, tc.dgst); return err }()},
				{"Delete", s.Delete(ctx, tc.dgst)},
				{"Update", func() error { _, err := s.Update(ctx, content.Info{Digest: tc.dgst}); return err }()},
				{"Writer", func() error {
					_, err := s.Writer(ctx, content.WriterOpts{Ref: "r", Expected: tc.dgst})
					return err
				}()},
			}
			for _, c := range calls {
				if !errors.Is(c.err, errdefs.ErrInvalidArgument) {
					t.Errorf("%s(%q) = %v, want ErrInvalidArgument", c.op, tc.dgst, c.err)
				} else if !strings.Contains(c.err.Error(), tc.mention) {
					t.Errorf("%s(%q) error %q does not mention %q", c.op, tc.dgst, c.err, tc.mention)
				}
			}
		})
	}
}

func TestLayout(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	b := []byte("layout")
	dgst := digest.FromBytes(b)
	labels := map[string]string{"k": "v"}
	if err := content.WriteBlob(ctx, s, dgst.String(), bytes.NewReader(b), descFor(b), labels); err != nil {
		t.Fatal(err)
	}
	checkCommitted(t, s, dgst, b)
	if _, err := os.Stat(filepath.Join(s.root, "blobs", "sha256", dgst.Encoded())); err != nil {
		t.Errorf("blob not at blobs/sha256/<hex>: %v", err)
	}
	lb, err := os.ReadFile(filepath.Join(s.root, "labels", "sha256", dgst.Encoded()+".json"))
	if err != nil || string(lb) != `{"k":"v"}` {
		t.Errorf("labels file = %q, %v; want {\"k\":\"v\"}", lb, err)
	}
	for _, dir := range []string{s.ingestRoot(), s.trashDir(), s.labelDir()} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if dir != s.labelDir() || strings.HasPrefix(e.Name(), tempPrefix) {
				t.Errorf("leftover after a commit: %s", filepath.Join(dir, e.Name()))
			}
		}
	}
	if err := s.Delete(ctx, dgst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.labelPath(dgst)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("labels survived Delete: %v", err)
	}
}

func TestNoFileDescriptorLeaks(t *testing.T) {
	ctx := t.Context()
	s := newStore(t)
	b := bytes.Repeat([]byte("fd"), 5000)
	dgst := digest.FromBytes(b)
	open := func() int {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("cannot count open files: %v", err)
		}
		return len(entries)
	}
	exercise := func() {
		w, err := s.Writer(ctx, content.WriterOpts{Ref: "fd", Expected: dgst, Total: int64(len(b))})
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(b[:100])
		_, _ = s.Writer(ctx, content.WriterOpts{Ref: "fd", Expected: dgst}) // unavailable
		_ = s.Abort(ctx, "fd")                                              // unavailable
		_ = w.Close()
		w, _ = s.Writer(ctx, content.WriterOpts{Ref: "fd", Expected: dgst})
		_ = w.Commit(ctx, 0, digest.FromString("wrong"), nil) // data loss
		_ = content.WriteBlob(ctx, s, "fd", bytes.NewReader(b), descFor(b), map[string]string{"a": "b"})
		_ = content.WriteBlob(ctx, s, "fd", bytes.NewReader(b), descFor(b), nil) // exists
		_, _ = content.ReadBlob(ctx, s, descFor(b), 1)                           // too big
		_, _ = content.ReadBlob(ctx, s, descFor(b), 1<<20)
		_, _ = s.Update(ctx, content.Info{Digest: dgst, Labels: map[string]string{"c": "d"}})
		_ = s.Walk(ctx, func(content.Info) error { return nil })
		_, _ = s.ListStatuses(ctx)
		_ = s.Delete(ctx, dgst)
	}
	exercise() // warm up whatever the runtime opens once
	before := open()
	for range 20 {
		exercise()
	}
	if after := open(); after != before {
		t.Fatalf("%d open files before, %d after", before, after)
	}
}

func descFor(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{Digest: digest.FromBytes(b), Size: int64(len(b))}
}
