package images

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// Platform names an operating system and CPU architecture, with the CPU
// variant where it matters ("linux/arm/v7"). Values returned by ParsePlatform
// and DefaultPlatform are normalized the way containerd normalizes them
// ("aarch64" is "arm64", "x86_64" is "amd64", "arm" alone is "arm/v7").
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// String returns "os/arch" or "os/arch/variant".
func (p Platform) String() string {
	if p.Variant == "" {
		return p.OS + "/" + p.Architecture
	}
	return p.OS + "/" + p.Architecture + "/" + p.Variant
}

// OCI returns p as an OCI platform.
func (p Platform) OCI() ocispec.Platform {
	return ocispec.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// FromOCI returns the normalized Platform of an OCI platform.
func FromOCI(p ocispec.Platform) Platform {
	return normalize(Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}

// DefaultPlatform returns the platform of the running host: GOOS, GOARCH
// and, for 32-bit arm, the variant the binary was built for (v7 if unknown).
func DefaultPlatform() Platform {
	p := Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm" {
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" {
					p.Variant = "v" + strings.SplitN(s.Value, ",", 2)[0]
				}
			}
		}
	}
	return normalize(p)
}

var knownOS = map[string]bool{
	"aix": true, "android": true, "darwin": true, "dragonfly": true, "freebsd": true,
	"illumos": true, "ios": true, "js": true, "linux": true, "netbsd": true,
	"openbsd": true, "plan9": true, "solaris": true, "wasip1": true, "windows": true,
}

var knownArch = map[string]bool{
	"386": true, "amd64": true, "arm": true, "arm64": true, "loong64": true,
	"mips": true, "mipsle": true, "mips64": true, "mips64le": true, "ppc64": true,
	"ppc64le": true, "riscv64": true, "s390x": true, "wasm": true,
	// aliases normalize() understands
	"i386": true, "x86_64": true, "x86-64": true, "aarch64": true, "armhf": true, "armel": true,
}

// ParsePlatform parses "os", "arch", "os/arch" or "os/arch/variant". A single
// component is an OS if it names one (the architecture is the host's) and
// otherwise an architecture (the OS is the host's). The result is normalized.
// A malformed specifier returns an error wrapping errdefs.ErrInvalidArgument.
func ParsePlatform(s string) (Platform, error) {
	bad := func(why string) (Platform, error) {
		return Platform{}, fmt.Errorf("invalid platform %q: %s (want os/arch[/variant], e.g. linux/arm64): %w",
			s, why, errdefs.ErrInvalidArgument)
	}
	if s == "" {
		return bad("empty")
	}
	parts := strings.Split(strings.ToLower(s), "/")
	for _, part := range parts {
		if part == "" {
			return bad("empty component")
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
				return bad(fmt.Sprintf("character %q not allowed", r))
			}
		}
	}
	host := DefaultPlatform()
	var p Platform
	switch len(parts) {
	case 1:
		switch {
		case knownOS[parts[0]]:
			p = Platform{OS: parts[0], Architecture: host.Architecture, Variant: host.Variant}
		case knownArch[parts[0]]:
			p = Platform{OS: host.OS, Architecture: parts[0]}
		default:
			return bad(fmt.Sprintf("%q is neither a known OS nor a known architecture", parts[0]))
		}
	case 2:
		p = Platform{OS: parts[0], Architecture: parts[1]}
	case 3:
		p = Platform{OS: parts[0], Architecture: parts[1], Variant: parts[2]}
	default:
		return bad("too many components")
	}
	if p.OS == "macos" {
		p.OS = "darwin"
	}
	if !knownOS[p.OS] {
		return bad(fmt.Sprintf("unknown OS %q", p.OS))
	}
	if !knownArch[p.Architecture] {
		return bad(fmt.Sprintf("unknown architecture %q", p.Architecture))
	}
	return normalize(p), nil
}

// normalize maps architecture and variant aliases to containerd's canonical
// names.
func normalize(p Platform) Platform {
	p.OS = strings.ToLower(p.OS)
	if p.OS == "macos" {
		p.OS = "darwin"
	}
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "i386":
		p.Architecture, p.Variant = "386", ""
	case "x86_64", "x86-64", "amd64":
		p.Architecture = "amd64"
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		switch p.Variant {
		case "8", "v8", "v8.0":
			p.Variant = ""
		}
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	}
	return p
}

// vector returns the platforms a host of platform p runs, best first, in
// the manner of containerd's platforms.Only: arm/v7 also runs v6 and v5,
// arm64 also runs arm/v8 and below, amd64/v3 also runs v2, v1 and 386.
func (p Platform) vector() []Platform {
	p = normalize(p)
	out := []Platform{p}
	switch p.Architecture {
	case "amd64":
		if n, ok := variantNumber(p.Variant); ok {
			for i := n - 1; i >= 2; i-- {
				out = append(out, Platform{OS: p.OS, Architecture: "amd64", Variant: fmt.Sprintf("v%d", i)})
			}
			if n > 1 {
				out = append(out, Platform{OS: p.OS, Architecture: "amd64"})
			}
		}
		out = append(out, Platform{OS: p.OS, Architecture: "386"})
	case "arm64":
		if p.Variant == "" {
			out = append(out, Platform{OS: p.OS, Architecture: "arm", Variant: "v8"}.vector()...)
		}
	case "arm":
		if n, ok := variantNumber(p.Variant); ok {
			for i := n - 1; i >= 5; i-- {
				out = append(out, Platform{OS: p.OS, Architecture: "arm", Variant: fmt.Sprintf("v%d", i)})
			}
		}
	}
	return out
}

func variantNumber(v string) (int, bool) {
	if v == "" {
		return 1, true
	}
	var n int
	if _, err := fmt.Sscanf(v, "v%d", &n); err != nil || fmt.Sprintf("v%d", n) != v {
		return 0, false
	}
	return n, true
}

// Match reports whether a host of platform p can run an image built for
// other. "linux/amd64" matches an image whose variant is omitted, arm/v7
// matches arm/v6, arm64 matches arm/v7, and so on.
func (p Platform) Match(other ocispec.Platform) bool {
	_, ok := p.rank(other)
	return ok
}

// rank returns how good a match other is for p (0 is exact; higher is
// worse) and whether it matches at all.
func (p Platform) rank(other ocispec.Platform) (int, bool) {
	o := FromOCI(other)
	for i, c := range p.vector() {
		if c == o {
			return i, true
		}
	}
	return 0, false
}

// ConfigPlatform returns the platform an image config says its image is
// built for, and checks it against want, the platform a pull asked for. A
// config that names no OS or architecture is taken to be want's (an index,
// if any, chose it). A config built for another OS or architecture, or
// another variant where both name one, is an error wrapping
// errdefs.ErrNotFound: the image has nothing for want.
func ConfigPlatform(blob []byte, want Platform) (Platform, error) {
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if err := json.Unmarshal(blob, &cfg); err != nil {
		return Platform{}, fmt.Errorf("image config is not valid JSON: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if cfg.OS == "" || cfg.Architecture == "" {
		return want, nil
	}
	got := FromOCI(ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
	if got.OS != want.OS || got.Architecture != want.Architecture ||
		got.Variant != "" && want.Variant != "" && got.Variant != want.Variant {
		return got, fmt.Errorf("the image is built for %s, not for %s (pull with --platform %s to fetch it anyway): %w", got, want, got, errdefs.ErrNotFound)
	}
	if got.Variant == "" {
		got.Variant = want.Variant
	}
	return got, nil
}
