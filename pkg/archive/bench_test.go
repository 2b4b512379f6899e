package archive

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

// compressible returns n bytes that compress like program text (about 3:1).
func compressible(r *rand.Rand, n int) []byte {
	words := strings.Fields("the quick brown fox jumps over lazy dog func return error nil if else for range " +
		"package import struct interface map slice string int64 context digest layer snapshot")
	var b bytes.Buffer
	for b.Len() < n {
		if r.Intn(8) == 0 {
			fmt.Fprintf(&b, "%x ", r.Uint64())
		} else {
			b.WriteString(words[r.Intn(len(words))])
			b.WriteByte(" \n"[r.Intn(2)])
		}
	}
	return b.Bytes()[:n]
}

// BenchmarkApply applies a many-small-files layer (5,000 files of 0.5-8 KiB
// in 100 dirs) and a large-file layer (one 64 MiB file), in each
// compression, reporting uncompressed MB/s. The tar(1) sub-benchmarks run
// GNU tar on the same blob as the peer to compare with (DESIGN.md).
// ARCHIVE_BENCH_DIR chooses where layers are written (default: a temp dir),
// e.g. /dev/shm to take the disk out of the measurement.
func BenchmarkApply(b *testing.B) {
	requireRoot(b)
	benchDir := func(b *testing.B) string {
		if d := os.Getenv("ARCHIVE_BENCH_DIR"); d != "" {
			base, err := os.MkdirTemp(d, "bench-")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(base) })
			return base
		}
		return b.TempDir()
	}
	r := rand.New(rand.NewSource(1))
	var small []ent
	for d := 0; d < 100; d++ {
		small = append(small, dir(fmt.Sprintf("usr/share/d%03d", d), 0o755))
		for f := 0; f < 50; f++ {
			small = append(small, file(fmt.Sprintf("usr/share/d%03d/f%02d", d, f), string(compressible(r, 512+r.Intn(8<<10))), 0o644))
		}
	}
	large := []ent{file("blob", string(compressible(r, 64<<20)), 0o644)}

	for _, set := range []struct {
		name    string
		entries []ent
	}{{"small-files", small}, {"large-file", large}} {
		tarBytes := mkTar(b, set.entries...)
		for _, c := range []testimage.Compression{testimage.Gzip, testimage.Zstd, testimage.Uncompressed} {
			l, err := testimage.FromTar(c, tarBytes)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(set.name+"/"+c.String(), func(b *testing.B) {
				base := benchDir(b)
				b.SetBytes(int64(len(tarBytes)))
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					d := filepath.Join(base, fmt.Sprint(i))
					if err := os.Mkdir(d, 0o755); err != nil {
						b.Fatal(err)
					}
					if _, err := Apply(context.Background(), d, bytes.NewReader(l.Blob), Options{Mode: OverlayForm, DiffID: l.DiffID}); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.RemoveAll(d)
					b.StartTimer()
				}
			})
			if c == testimage.Zstd {
				continue // GNU tar's zstd support depends on the zstd binary
			}
			b.Run(set.name+"/"+c.String()+"/tar(1)", func(b *testing.B) {
				tarBin, err := exec.LookPath("tar")
				if err != nil {
					b.Skip("no tar(1) to compare with")
				}
				base := benchDir(b)
				b.SetBytes(int64(len(tarBytes)))
				for i := 0; i < b.N; i++ {
					d := filepath.Join(base, fmt.Sprint(i))
					if err := os.Mkdir(d, 0o755); err != nil {
						b.Fatal(err)
					}
					args := []string{"-x", "-C", d, "--same-owner", "-p"}
					if c == testimage.Gzip {
						args = append(args, "-z")
					}
					cmd := exec.Command(tarBin, args...)
					cmd.Stdin = bytes.NewReader(l.Blob)
					if out, err := cmd.CombinedOutput(); err != nil {
						b.Fatalf("tar: %v: %s", err, out)
					}
					b.StopTimer()
					os.RemoveAll(d)
					b.StartTimer()
				}
			})
		}
	}
}
