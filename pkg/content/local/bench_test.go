package local_test

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/content/local"
)

// BenchmarkIngest measures writing and committing a 16 MiB blob: hashing,
// one fsync and the rename.
func BenchmarkIngest(b *testing.B) {
	data := make([]byte, 16<<20)
	rand.New(rand.NewSource(1)).Read(data)
	desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		s, err := local.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := content.WriteBlob(ctx, s, desc.Digest.String(), bytes.NewReader(data), desc, nil); err != nil {
			b.Fatal(err)
		}
	}
}
