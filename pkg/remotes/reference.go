package remotes

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// dockerHub is the normalized name of Docker Hub; ggcr calls it
// index.docker.io, which is also the host requests go to.
const dockerHub = "docker.io"

// pathComponent is one component of a repository path, as the distribution
// reference grammar defines it.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)

// Reference is a normalized image reference: registry, repository and a tag,
// a digest or both. The zero value is not a valid reference; make one with
// ParseReference.
type Reference struct {
	registry   string // normalized, e.g. "docker.io" or "127.0.0.1:5000"
	repository string // e.g. "library/busybox"
	tag        string // may be empty when dgst is set
	dgst       digest.Digest
	repo       name.Repository // ggcr's view, for auth and the HTTP host
}

// ParseReference parses and normalizes an image reference the way docker and
// containerd do: "busybox" is "docker.io/library/busybox:latest",
// "ghcr.io/x/y@sha256:…" keeps its digest and gets no tag, and
// "app:1.0@sha256:…" keeps both. A malformed reference (empty, with a
// scheme, upper case in the repository, a bad tag or digest) returns an error
// wrapping errdefs.ErrInvalidArgument that says what is wrong.
func ParseReference(s string) (Reference, error) {
	bad := func(why string) (Reference, error) {
		return Reference{}, fmt.Errorf("invalid image reference %q: %s: %w", s, why, errdefs.ErrInvalidArgument)
	}
	switch {
	case s == "":
		return bad("empty")
	case strings.Contains(s, "://"):
		return bad("a reference has no scheme; write it as host[:port]/repository[:tag]")
	case strings.ContainsAny(s, " \t\r\n"):
		return bad("contains white space")
	}
	base, dg, hasDigest := strings.Cut(s, "@")
	var ref Reference
	if hasDigest {
		d, err := digest.Parse(dg)
		if err != nil {
			return bad(fmt.Sprintf("digest %q is not valid (%v); want algorithm:hex, e.g. sha256:<64 hex digits>", dg, err))
		}
		ref.dgst = d
	}
	if base == "" {
		return bad("no repository")
	}
	// An explicit tag is a ':' after the last '/'.
	explicitTag := strings.Contains(base[strings.LastIndex(base, "/")+1:], ":")
	if explicitTag && strings.HasSuffix(base, ":") {
		return bad("empty tag")
	}
	tag, err := name.NewTag(base)
	if err != nil {
		return bad(strings.TrimPrefix(err.Error(), "could not parse reference: "))
	}
	ref.repo = tag.Context()
	ref.registry = tag.RegistryStr()
	if ref.registry == name.DefaultRegistry {
		ref.registry = dockerHub
	}
	ref.repository = tag.RepositoryStr()
	for _, c := range strings.Split(ref.repository, "/") {
		if !pathComponent.MatchString(c) {
			return bad(fmt.Sprintf("repository path component %q must be lower-case letters and digits separated by '.', '_', '__' or '-'", c))
		}
	}
	if explicitTag || !hasDigest {
		ref.tag = tag.TagStr()
	}
	return ref, nil
}

// String returns the normalized reference, e.g.
// "docker.io/library/busybox:latest" or "127.0.0.1:5000/app@sha256:…".
func (r Reference) String() string {
	s := r.Name()
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.dgst != "" {
		s += "@" + r.dgst.String()
	}
	return s
}

// Name returns registry/repository without tag or digest.
func (r Reference) Name() string { return r.registry + "/" + r.repository }

// Registry returns the normalized registry host[:port]: "docker.io" for
// Docker Hub.
func (r Reference) Registry() string { return r.registry }

// Repository returns the repository path within the registry, e.g.
// "library/busybox".
func (r Reference) Repository() string { return r.repository }

// Tag returns the tag, or "" when the reference names only a digest.
func (r Reference) Tag() string { return r.tag }

// Digest returns the digest, or "" when the reference names only a tag.
func (r Reference) Digest() digest.Digest { return r.dgst }

// Object returns what a manifest request for r asks for: the digest when r
// has one (a digest pins the content even when a tag is present), otherwise
// the tag.
func (r Reference) Object() string {
	if r.dgst != "" {
		return r.dgst.String()
	}
	return r.tag
}

// short returns the reference without the registry, for messages
// ("app:1.0", "library/busybox@sha256:…").
func (r Reference) short() string {
	return strings.TrimPrefix(r.String(), r.registry+"/")
}

// host returns the host requests go to (index.docker.io for Docker Hub).
func (r Reference) host() string { return r.repo.RegistryStr() }
