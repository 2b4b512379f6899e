package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
	"github.com/stevedore/stevedore/pkg/metrics"
)

// imageWalk is what a complete walk of an image found.
type imageWalk struct {
	size     int64
	rootSize int64
	blobs    int
	created  *time.Time
	manifest digest.Digest
	config   digest.Digest
	layers   []ocispec.Descriptor
	diffIDs  []digest.Digest
	platform images.Platform // the config's
}

// walk visits root and its children for platform in the store. It returns
// ok=false, with no error, as soon as a blob is missing.
func (f *Fetcher) walk(ctx context.Context, desc ocispec.Descriptor, platform images.Platform, depth int, w *imageWalk) (bool, error) {
	l := f.limits()
	if depth > l.MaxDepth {
		return false, fmt.Errorf("index nesting deeper than %d: %w", l.MaxDepth, errdefs.ErrResourceExhausted)
	}
	info, err := f.Store.Info(ctx, desc.Digest)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if depth == 0 {
		w.rootSize = info.Size
	}
	w.size += info.Size
	w.blobs++
	role := images.RoleOf(desc.MediaType)
	switch role {
	case events.RoleIndex, events.RoleManifest:
		blob, err := content.ReadBlob(ctx, f.Store, ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: info.Size}, l.MaxManifestSize)
		if err != nil {
			return false, err
		}
		children, err := images.Children(blob, ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: info.Size}, platform)
		if err != nil {
			return false, err
		}
		if role == events.RoleManifest {
			w.manifest = desc.Digest
		}
		for _, c := range children {
			switch c.Role {
			case events.RoleConfig:
				w.config = c.Descriptor.Digest
			case events.RoleLayer:
				w.layers = append(w.layers, c.Descriptor)
			}
			ok, err := f.walk(ctx, c.Descriptor, platform, depth+1, w)
			if err != nil || !ok {
				return ok, err
			}
		}
	case events.RoleConfig:
		blob, err := content.ReadBlob(ctx, f.Store, ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: info.Size}, l.MaxConfigSize)
		if err != nil {
			return false, err
		}
		created, diffIDs, err := images.ParseConfig(blob)
		if err != nil {
			return false, err
		}
		if w.platform, err = images.ConfigPlatform(blob, platform); err != nil {
			return false, err
		}
		w.created, w.diffIDs = created, diffIDs
	}
	return true, nil
}

// complete records the image and ends the pull if every blob under root is
// committed; when the pull asked for unpacking, it hands the image to the
// unpacker instead, which ends the pull. Several fetchers may find it
// complete at once; the message ids make the records one fact each.
func (f *Fetcher) complete(ctx context.Context, ev *events.Envelope, ref string, root ocispec.Descriptor, platformStr string, platform images.Platform, unpack bool) (bool, error) {
	var w imageWalk
	ok, err := f.walk(ctx, root, platform, 0, &w)
	if err != nil {
		return false, classify(fmt.Errorf("image %s: %w", ref, err))
	}
	if !ok {
		return false, nil
	}
	m := events.MetaFrom(ev, f.Node)
	target := ocispec.Descriptor{MediaType: root.MediaType, Digest: root.Digest, Size: w.rootSize}
	img, err := events.New(m, events.TypeImageUpdated, events.ImageAggregate(ref), events.ImageUpdated{
		Name: ref, Target: target, Size: w.size, Created: w.created, Platform: recordedPlatform(w.platform, platformStr),
	})
	if err != nil {
		return false, err
	}
	if err := f.publish(ctx, img, "image-updated/"+ev.Operation); err != nil {
		return false, err
	}
	if unpack {
		if len(w.layers) != len(w.diffIDs) {
			return false, events.Permanent(fmt.Errorf("image %s: manifest has %d layers but its config lists %d diff_ids: %w", ref, len(w.layers), len(w.diffIDs), errdefs.ErrInvalidArgument))
		}
		req, err := events.New(m, events.TypeUnpackRequested, events.ImageAggregate(ref), events.UnpackRequested{
			Ref: ref, Target: target, Manifest: w.manifest, Config: w.config, Layers: w.layers, DiffIDs: w.diffIDs,
			Size: w.size, Blobs: w.blobs,
		})
		if err != nil {
			return false, err
		}
		if err := f.publish(ctx, req, "unpack-requested/"+ev.Operation); err != nil {
			return false, err
		}
		f.Log.Info().Str("ref", ref).Str("op", ev.Operation).Int64("size", w.size).Int("blobs", w.blobs).Msg("fetched; unpack requested")
		return true, nil
	}
	done, err := events.New(m, events.TypePullCompleted, events.PullAggregate(ev.Operation), events.PullCompleted{
		Ref: ref, Target: root.Digest, Size: w.size, Blobs: w.blobs,
	})
	if err != nil {
		return false, err
	}
	if err := f.publish(ctx, done, "completed/"+ev.Operation); err != nil {
		return false, err
	}
	metrics.PullsCompleted.Inc()
	f.Log.Info().Str("ref", ref).Str("op", ev.Operation).Int64("size", w.size).Int("blobs", w.blobs).Msg("pull complete")
	return true, nil
}

func (f *Fetcher) deleteContent(ctx context.Context, ev *events.Envelope, p events.ContentDeleteRequested) error {
	err := f.Store.Delete(ctx, p.Digest)
	// Not found counts as deleted: a redelivery after a crash between the
	// delete and its record must still record it.
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return classify(fmt.Errorf("delete %s: %w", p.Digest, err))
	}
	out, err := events.New(events.MetaFrom(ev, f.Node), events.TypeBlobDeleted, events.BlobAggregate(p.Digest), events.BlobDeleted{Digest: p.Digest})
	if err != nil {
		return err
	}
	return f.publish(ctx, out, "blob-deleted/"+ev.Operation)
}

// recordedPlatform is the platform an image is recorded under: its
// config's, or the requested one where the config names none.
func recordedPlatform(config images.Platform, requested string) string {
	if config.OS == "" {
		return requested
	}
	return config.String()
}
