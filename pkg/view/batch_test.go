package view

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/stevedore/stevedore/pkg/events"
)

// TestBatchesEqualOneByOne checks that applying the log in batches of any
// size, with restarts and redelivered windows (inside batches too), yields
// byte for byte the view applying it one event at a time does.
func TestBatchesEqualOneByOne(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			log := genLog(t, 600, seed)
			one := openMem(t)
			for _, ev := range log {
				mustApply(t, one, fromLog(t, ev))
			}

			r := rand.New(rand.NewPCG(seed, 7))
			fs := vfs.NewMem()
			batched, err := Open("b", WithFS(fs))
			if err != nil {
				t.Fatal(err)
			}
			sizes := map[int]bool{}
			for i := 0; i < len(log); {
				if r.IntN(15) == 0 { // restart
					if err := batched.Close(); err != nil {
						t.Fatal(err)
					}
					if batched, err = Open("b", WithFS(fs)); err != nil {
						t.Fatal(err)
					}
					if batched.AppliedSeq() != uint64(i) {
						t.Fatalf("after restart applied = %d, want %d", batched.AppliedSeq(), i)
					}
				}
				n := 1 + r.IntN(min(120, len(log)-i))
				var batch []*events.Envelope
				if i > 0 && r.IntN(4) == 0 { // a redelivered window first
					for _, ev := range log[r.IntN(i):i] {
						batch = append(batch, fromLog(t, ev))
					}
				}
				for _, ev := range log[i : i+n] {
					batch = append(batch, fromLog(t, ev))
					if r.IntN(30) == 0 { // a duplicate inside the batch
						batch = append(batch, fromLog(t, ev))
					}
				}
				if err := batched.ApplyBatch(batch); err != nil {
					t.Fatal(err)
				}
				sizes[n] = true
				i += n
			}
			defer batched.Close()
			if len(sizes) < 10 {
				t.Fatalf("only batch sizes %v were tried", sizes)
			}
			a, b := dump(t, one), dump(t, batched)
			if !bytes.Equal(a, b) {
				t.Fatalf("batched view differs from one-by-one view:\none by one:\n%s\nbatched:\n%s", a, b)
			}
			seqA, sumA, err := one.Digest()
			if err != nil {
				t.Fatal(err)
			}
			seqB, sumB, err := batched.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if seqA != uint64(len(log)) || seqA != seqB || sumA != sumB {
				t.Fatalf("digests (%d, %s) and (%d, %s), want equal at %d", seqA, sumA, seqB, sumB, len(log))
			}
		})
	}
}

// An unusable event in the middle of a batch is skipped, and the events
// around it still apply.
func TestBatchSkipsUnusableEvent(t *testing.T) {
	v := openMem(t)
	var g gen
	first := g.ev(t, "default", "op1", "", events.TypeImageUpdated, events.ImageAggregate("a:1"), events.ImageUpdated{Name: "a:1"})
	// Readable, but without a node: the view cannot say where it is unpacked.
	bad := g.ev(t, "default", "op1", "", events.TypeImageUnpacked, events.ImageAggregate("a:1"), events.ImageUnpacked{Name: "a:1", ChainID: dgst("c")})
	bad.Node = ""
	last := g.ev(t, "default", "op2", "", events.TypeImageUpdated, events.ImageAggregate("b:1"), events.ImageUpdated{Name: "b:1"})
	if err := v.ApplyBatch([]*events.Envelope{first, bad, last}); err != nil {
		t.Fatal(err)
	}
	imgs, err := v.Images("default")
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || len(imgs[0].Unpacked) != 0 {
		t.Fatalf("images = %+v", imgs)
	}
	if v.AppliedSeq() != 3 {
		t.Fatalf("applied = %d", v.AppliedSeq())
	}
	if err := v.ApplyBatch([]*events.Envelope{{Seq: 9}, nil}); err == nil {
		t.Fatal("a batch with a nil event applied")
	}
	if v.AppliedSeq() != 3 {
		t.Fatal("a refused batch moved the watermark")
	}
}

// A digest is of a consistent snapshot: its sequence is the one whose
// state it hashes, even while events are applied.
func TestDigestIsConsistent(t *testing.T) {
	log := genLog(t, 300, 9)
	live := openMem(t)
	sums := map[uint64]string{} // seq → digest of a view fed one by one up to it
	ref := openMem(t)
	for _, ev := range log {
		mustApply(t, ref, fromLog(t, ev))
		_, sum, err := ref.Digest()
		if err != nil {
			t.Fatal(err)
		}
		sums[ev.Seq] = sum
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(log); i += 7 {
			var batch []*events.Envelope
			for _, ev := range log[i:min(i+7, len(log))] {
				batch = append(batch, fromLog(t, ev))
			}
			if err := live.ApplyBatch(batch); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	checked := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		seq, sum, err := live.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if seq == 0 {
			continue
		}
		if sum != sums[seq] {
			t.Fatalf("digest at %d is %s, want %s", seq, sum, sums[seq])
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no digest was checked")
	}
}

// Replace swaps a rebuilt view in, and the old one is gone.
func TestReplace(t *testing.T) {
	dir := t.TempDir()
	live, fresh := filepath.Join(dir, "view"), filepath.Join(dir, "view.rebuild")
	var g gen
	write := func(path, name string) {
		v, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, v, g.ev(t, "default", "", "", events.TypeImageUpdated, events.ImageAggregate(name), events.ImageUpdated{Name: name}))
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
	}
	names := func() []string {
		v, err := Open(live)
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		imgs, err := v.Images("default")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range imgs {
			out = append(out, i.Name)
		}
		return out
	}
	// Nothing in place yet: moved in.
	write(fresh, "first")
	if err := Replace(live, fresh); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 1 || got[0] != "first" {
		t.Fatalf("after the first replace: %v", got)
	}
	// An old view in place: exchanged, and the old one removed.
	write(fresh, "second")
	if err := Replace(live, fresh); err != nil {
		t.Fatal(err)
	}
	if got := names(); len(got) != 1 || got[0] != "second" {
		t.Fatalf("after the second replace: %v", got)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Fatalf("left in %s: %v", dir, ents)
	}
	if err := Replace(live, fresh); err == nil {
		t.Fatal("replacing with a missing view succeeded")
	}
}
