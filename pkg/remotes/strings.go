package remotes

import (
	"context"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Strings adapts a Remote to callers that carry references as the
// normalized strings events hold (Reference.String()).
type Strings struct{ R *Remote }

// StringRefs returns r as a Strings adapter.
func StringRefs(r *Remote) Strings { return Strings{R: r} }

// Resolve parses ref and resolves it.
func (s Strings) Resolve(ctx context.Context, ref string, plainHTTP bool) (ocispec.Descriptor, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return s.R.Resolve(ctx, r, plainHTTP)
}

// Fetch parses ref and fetches desc from offset.
func (s Strings) Fetch(ctx context.Context, ref string, desc ocispec.Descriptor, offset int64, plainHTTP bool) (io.ReadCloser, int64, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, 0, err
	}
	return s.R.Fetch(ctx, r, desc, offset, plainHTTP)
}
