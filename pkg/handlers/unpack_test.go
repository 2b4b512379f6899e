package handlers_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/rs/zerolog"

	"github.com/stevedore/stevedore/internal/testutil/natstest"
	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/archive"
	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/content/local"
	"github.com/stevedore/stevedore/pkg/events"
	sdjs "github.com/stevedore/stevedore/pkg/events/jetstream"
	"github.com/stevedore/stevedore/pkg/handlers"
	"github.com/stevedore/stevedore/pkg/snapshots/overlay"
)

// slowApplier applies layers with pkg/archive, as the unpacker daemon does,
// holding each apply a little so that concurrent ones overlap, and counts
// how many run at once.
type slowApplier struct {
	hold      time.Duration
	now, most atomic.Int32
	mu        sync.Mutex
	applied   map[digest.Digest]int
}

func (a *slowApplier) ApplyLayer(ctx context.Context, dir string, r io.Reader, diffID digest.Digest, lowers []string) (int64, error) {
	n := a.now.Add(1)
	defer a.now.Add(-1)
	for {
		m := a.most.Load()
		if n <= m || a.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(a.hold)
	res, err := archive.Apply(ctx, dir, r, archive.Options{Mode: archive.OverlayForm, DiffID: diffID, Lowers: lowers})
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	a.applied[diffID]++
	a.mu.Unlock()
	return res.Size, nil
}

// The unpacker applies an image's layers at once, as many as Parallel
// allows and no more; a redelivered request applies nothing again and
// records nothing new.
func TestUnpackParallelBoundAndRedelivery(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root for overlay snapshots (CI=true: not skipping)")
		}
		t.Skip("needs root")
	}
	s := natstest.Start(t)
	ctx := context.Background()
	root := t.TempDir()
	store, err := local.New(filepath.Join(root, "content"))
	if err != nil {
		t.Fatal(err)
	}
	sn, err := overlay.New(filepath.Join(root, "overlay"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })

	const layers, parallel = 6, 2
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for i := range layers {
		l, err := testimage.RandomLayerWith(16<<10, int64(100+i), testimage.Gzip)
		if err != nil {
			t.Fatal(err)
		}
		d := l.Descriptor(testimage.OCI)
		if err := content.WriteBlob(ctx, store, d.Digest.String(), bytes.NewReader(l.Blob), d, nil); err != nil {
			t.Fatal(err)
		}
		descs, diffIDs = append(descs, d), append(diffIDs, l.DiffID)
	}
	ap := &slowApplier{hold: 150 * time.Millisecond, applied: map[digest.Digest]int{}}
	u := &handlers.Unpacker{
		Store: store, Snapshotter: sn, Applier: ap, Pub: sdjs.NewPublisher(s.JS),
		SnapshotterName: "overlay", Node: testNode, Parallel: parallel, Log: zerolog.Nop(),
	}
	req, err := events.New(events.Meta{Namespace: "default", Operation: "op-unpack", Actor: "test", Node: testNode},
		events.TypeUnpackRequested, events.ImageAggregate("r/app:1"), events.UnpackRequested{
			Ref: "r/app:1", Target: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m")},
			Layers: descs, DiffIDs: diffIDs,
		})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := u.Handle(ctx, req); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if got := ap.most.Load(); got != parallel {
		t.Errorf("%d layers applied at once, want exactly Parallel=%d", got, parallel)
	}
	// Sequential would take layers×hold; unbounded about one hold.
	if min := time.Duration(layers/parallel) * ap.hold; took < min {
		t.Errorf("unpack took %v, less than %v: more than %d layers at once", took, min, parallel)
	}
	for _, d := range diffIDs {
		if ap.applied[d] != 1 {
			t.Errorf("layer %s applied %d times, want 1", d, ap.applied[d])
		}
	}
	seqBefore := lastSeq(t, s)

	// Redelivery: every snapshot is there; nothing is applied again, and
	// the records it repeats are deduplicated by their message ids.
	if err := u.Handle(ctx, req); err != nil {
		t.Fatal(err)
	}
	for _, d := range diffIDs {
		if ap.applied[d] != 1 {
			t.Errorf("after redelivery, layer %s applied %d times, want 1", d, ap.applied[d])
		}
	}
	if after := lastSeq(t, s); after != seqBefore {
		t.Errorf("redelivery appended %d events, want none", after-seqBefore)
	}
}

func lastSeq(t *testing.T, s *natstest.Server) uint64 {
	t.Helper()
	st, err := s.JS.Stream(context.Background(), events.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}
