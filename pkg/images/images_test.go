package images_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
	"github.com/stevedore/stevedore/pkg/images"
)

func TestRolesMatchEvents(t *testing.T) {
	if images.RoleIndex != events.RoleIndex || images.RoleManifest != events.RoleManifest ||
		images.RoleConfig != events.RoleConfig || images.RoleLayer != events.RoleLayer {
		t.Fatal("images roles differ from events roles")
	}
}

func TestMediaTypes(t *testing.T) {
	cases := []struct {
		mt                                 string
		index, manifest, config, layer, nd bool
		compression                        string
		role                               string
	}{
		{mt: images.MediaTypeOCIIndex, index: true, role: images.RoleIndex},
		{mt: images.MediaTypeDockerManifestList, index: true, role: images.RoleIndex},
		{mt: images.MediaTypeOCIManifest, manifest: true, role: images.RoleManifest},
		{mt: images.MediaTypeDockerManifest, manifest: true, role: images.RoleManifest},
		{mt: images.MediaTypeDockerManifest + "; charset=utf-8", manifest: true, role: images.RoleManifest},
		{mt: images.MediaTypeOCIConfig, config: true, role: images.RoleConfig},
		{mt: images.MediaTypeDockerConfig, config: true, role: images.RoleConfig},
		{mt: images.MediaTypeOCILayer, layer: true, compression: images.CompressionNone, role: images.RoleLayer},
		{mt: images.MediaTypeOCILayerGzip, layer: true, compression: images.CompressionGzip, role: images.RoleLayer},
		{mt: images.MediaTypeOCILayerZstd, layer: true, compression: images.CompressionZstd, role: images.RoleLayer},
		{mt: images.MediaTypeOCILayerNonDistributableGzip, layer: true, nd: true, compression: images.CompressionGzip, role: images.RoleLayer},
		{mt: images.MediaTypeOCILayerNonDistributableZstd, layer: true, nd: true, compression: images.CompressionZstd, role: images.RoleLayer},
		{mt: images.MediaTypeDockerLayer, layer: true, compression: images.CompressionNone, role: images.RoleLayer},
		{mt: images.MediaTypeDockerLayerGzip, layer: true, compression: images.CompressionGzip, role: images.RoleLayer},
		{mt: images.MediaTypeDockerLayerZstd, layer: true, compression: images.CompressionZstd, role: images.RoleLayer},
		{mt: images.MediaTypeDockerLayerForeignGzip, layer: true, nd: true, compression: images.CompressionGzip, role: images.RoleLayer},
		{mt: images.MediaTypeDockerLayerForeign, layer: true, nd: true, compression: images.CompressionNone, role: images.RoleLayer},
		{mt: images.MediaTypeDockerSchema1SignedManifest},
		{mt: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"},
		{mt: "application/json"},
		{mt: ""},
	}
	for _, tc := range cases {
		if images.IsIndex(tc.mt) != tc.index || images.IsManifest(tc.mt) != tc.manifest ||
			images.IsConfig(tc.mt) != tc.config || images.IsLayer(tc.mt) != tc.layer ||
			images.IsNonDistributable(tc.mt) != tc.nd || images.RoleOf(tc.mt) != tc.role {
			t.Errorf("%q: index %v manifest %v config %v layer %v nondistributable %v role %q",
				tc.mt, images.IsIndex(tc.mt), images.IsManifest(tc.mt), images.IsConfig(tc.mt),
				images.IsLayer(tc.mt), images.IsNonDistributable(tc.mt), images.RoleOf(tc.mt))
		}
		c, ok := images.LayerCompression(tc.mt)
		if ok != tc.layer || c != tc.compression {
			t.Errorf("LayerCompression(%q) = %q, %v", tc.mt, c, ok)
		}
	}
}

func TestParsePlatform(t *testing.T) {
	host := images.DefaultPlatform()
	valid := map[string]string{
		"linux/amd64":     "linux/amd64",
		"linux/x86_64":    "linux/amd64",
		"linux/amd64/v1":  "linux/amd64",
		"linux/amd64/v3":  "linux/amd64/v3",
		"Linux/AMD64":     "linux/amd64",
		"linux/arm64":     "linux/arm64",
		"linux/aarch64":   "linux/arm64",
		"linux/arm64/v8":  "linux/arm64",
		"linux/arm":       "linux/arm/v7",
		"linux/arm/7":     "linux/arm/v7",
		"linux/arm/v6":    "linux/arm/v6",
		"linux/armhf":     "linux/arm/v7",
		"linux/armel":     "linux/arm/v6",
		"linux/i386":      "linux/386",
		"linux/s390x":     "linux/s390x",
		"windows/amd64":   "windows/amd64",
		"macos/arm64":     "darwin/arm64",
		"arm64":           host.OS + "/arm64",
		"linux/riscv64":   "linux/riscv64",
		"linux/ppc64le":   "linux/ppc64le",
		"linux":           images.Platform{OS: "linux", Architecture: host.Architecture, Variant: host.Variant}.String(),
		"linux/arm/v8":    "linux/arm/v8",
		"linux/arm64/v9":  "linux/arm64/v9",
		"freebsd/amd64":   "freebsd/amd64",
		"linux/mips64le":  "linux/mips64le",
		"linux/loong64":   "linux/loong64",
		"linux/386":       "linux/386",
		"linux/amd64/v2 ": "",
	}
	for in, want := range valid {
		got, err := images.ParsePlatform(in)
		if want == "" {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("ParsePlatform(%q) = %v, %v; want ErrInvalidArgument", in, got, err)
			}
			continue
		}
		if err != nil || got.String() != want {
			t.Errorf("ParsePlatform(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/", "linux/", "/amd64", "linux/amd64/v2/x", "plan10/amd64", "linux/z80", "linux/am d64", "toaster"} {
		_, err := images.ParsePlatform(in)
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "os/arch") {
			t.Errorf("ParsePlatform(%q) error = %v, want ErrInvalidArgument with a hint", in, err)
		}
	}
}

func TestDefaultPlatform(t *testing.T) {
	p := images.DefaultPlatform()
	again, err := images.ParsePlatform(p.String())
	if err != nil || again != p {
		t.Errorf("DefaultPlatform %q does not round-trip: %q, %v", p, again, err)
	}
}

func TestMatch(t *testing.T) {
	plat := func(s string) ocispec.Platform {
		parts := strings.Split(s, "/")
		p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) > 2 {
			p.Variant = parts[2]
		}
		return p
	}
	cases := []struct {
		host, image string
		want        bool
	}{
		{"linux/amd64", "linux/amd64", true},
		{"linux/amd64", "linux/x86_64", true},
		{"linux/amd64", "linux/amd64/v1", true},
		{"linux/amd64", "linux/amd64/v3", false},
		{"linux/amd64/v3", "linux/amd64/v2", true},
		{"linux/amd64/v3", "linux/amd64", true},
		{"linux/amd64", "linux/386", true},
		{"linux/amd64", "linux/arm64", false},
		{"linux/amd64", "windows/amd64", false},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64", "linux/aarch64", true},
		{"linux/arm64", "linux/arm/v7", true},
		{"linux/arm64", "linux/amd64", false},
		{"linux/arm/v7", "linux/arm/v7", true},
		{"linux/arm/v7", "linux/arm", true},
		{"linux/arm/v7", "linux/arm/v6", true},
		{"linux/arm/v7", "linux/arm/v5", true},
		{"linux/arm/v6", "linux/arm/v7", false},
		{"linux/arm/v7", "linux/arm64", false},
	}
	for _, tc := range cases {
		host, err := images.ParsePlatform(tc.host)
		if err != nil {
			t.Fatal(err)
		}
		if got := host.Match(plat(tc.image)); got != tc.want {
			t.Errorf("%s.Match(%s) = %v, want %v", tc.host, tc.image, got, tc.want)
		}
	}
}

func built(t *testing.T, img *testimage.Image) *testimage.Built {
	t.Helper()
	b, err := img.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func layer(t *testing.T, c testimage.Compression, content string) *testimage.Layer {
	t.Helper()
	l, err := testimage.NewLayer(c, testimage.File("f", []byte(content), 0o644))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func descOf(mt string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func TestChildrenOfManifest(t *testing.T) {
	host := images.Platform{OS: "linux", Architecture: "amd64"}
	for _, f := range []testimage.Format{testimage.OCI, testimage.Docker} {
		layers := []*testimage.Layer{layer(t, testimage.Gzip, "a"), layer(t, testimage.Zstd, "b"), layer(t, testimage.Uncompressed, "c")}
		b := built(t, &testimage.Image{Format: f, Layers: layers})
		md := b.Manifest
		md.Platform = nil
		children, err := images.Children(b.ManifestBytes, md, host)
		if err != nil {
			t.Fatalf("format %d: %v", f, err)
		}
		if len(children) != 4 || children[0].Role != images.RoleConfig || children[0].Descriptor.Digest != b.Config.Digest {
			t.Fatalf("format %d: children %+v, want config then 3 layers", f, children)
		}
		for i, l := range layers {
			c := children[i+1]
			if c.Role != images.RoleLayer || c.Descriptor.Digest != l.Digest || c.Descriptor.MediaType != l.MediaType(f) {
				t.Errorf("format %d: child %d = %+v, want layer %s", f, i+1, c, l.Digest)
			}
		}
	}
}

func TestChildrenOfIndex(t *testing.T) {
	for _, f := range []testimage.Format{testimage.OCI, testimage.Docker} {
		idx, err := testimage.MultiPlatform(f, testimage.Gzip)
		if err != nil {
			t.Fatal(err)
		}
		bi, err := idx.Build()
		if err != nil {
			t.Fatal(err)
		}
		for platform, want := range map[string]int{
			"linux/amd64":  0,
			"linux/arm64":  1,
			"linux/arm/v7": 2,
			"linux/arm/v8": 2,
			"linux/arm":    2,
		} {
			p, err := images.ParsePlatform(platform)
			if err != nil {
				t.Fatal(err)
			}
			children, err := images.Children(bi.IndexBytes, bi.Index, p)
			if err != nil {
				t.Fatalf("%s: %v", platform, err)
			}
			if len(children) != 1 || children[0].Role != images.RoleManifest ||
				children[0].Descriptor.Digest != bi.Images[want].Manifest.Digest {
				t.Errorf("format %d, %s: %+v, want manifest %d only", f, platform, children, want)
			}
		}
		_, err = images.Children(bi.IndexBytes, bi.Index, images.Platform{OS: "linux", Architecture: "s390x"})
		want := "no manifest for platform linux/s390x in index " + bi.Index.Digest.String() + ", available: linux/amd64, linux/arm64, linux/arm/v7"
		if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Errorf("s390x: %v, want ErrNotFound %q", err, want)
		}
	}
}

// index builds an OCI index listing descs.
func index(t *testing.T, descs ...ocispec.Descriptor) ([]byte, ocispec.Descriptor) {
	t.Helper()
	ix := ocispec.Index{MediaType: images.MediaTypeOCIIndex, Manifests: descs}
	ix.SchemaVersion = 2
	b, err := json.Marshal(ix)
	if err != nil {
		t.Fatal(err)
	}
	return b, descOf(images.MediaTypeOCIIndex, b)
}

func entry(mt, seed string, p *ocispec.Platform) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.FromString(seed), Size: 100, Platform: p}
}

func TestIndexSelection(t *testing.T) {
	amd := &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	amdV3 := &ocispec.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}
	armV6 := &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}
	armV7 := &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	unknown := &ocispec.Platform{OS: "unknown", Architecture: "unknown"}
	m := images.MediaTypeOCIManifest
	cases := []struct {
		name     string
		host     string
		entries  []ocispec.Descriptor
		want     string // seed of the chosen entry
		wantRole string
	}{
		{"exact before compatible", "linux/arm/v7", []ocispec.Descriptor{entry(m, "v6", armV6), entry(m, "v7", armV7)}, "v7", images.RoleManifest},
		{"compatible when no exact", "linux/arm/v7", []ocispec.Descriptor{entry(m, "v6", armV6)}, "v6", images.RoleManifest},
		{"arm64 runs arm", "linux/arm64", []ocispec.Descriptor{entry(m, "amd", amd), entry(m, "v7", armV7)}, "v7", images.RoleManifest},
		{"first on tie", "linux/amd64", []ocispec.Descriptor{entry(m, "first", amd), entry(m, "second", amd)}, "first", images.RoleManifest},
		{"v1 host skips v3", "linux/amd64", []ocispec.Descriptor{entry(m, "v3", amdV3), entry(m, "plain", amd)}, "plain", images.RoleManifest},
		{"v3 host prefers v3", "linux/amd64/v3", []ocispec.Descriptor{entry(m, "plain", amd), entry(m, "v3", amdV3)}, "v3", images.RoleManifest},
		{"attestation ignored", "linux/amd64", []ocispec.Descriptor{entry(m, "att", unknown), entry(m, "img", amd)}, "img", images.RoleManifest},
		{"non-manifest entries ignored", "linux/amd64", []ocispec.Descriptor{entry("application/vnd.example.sbom", "sbom", amd), entry(m, "img", amd)}, "img", images.RoleManifest},
		{"no platform last", "linux/amd64", []ocispec.Descriptor{entry(m, "none", nil), entry(m, "img", amd)}, "img", images.RoleManifest},
		{"no platform when nothing else", "linux/amd64", []ocispec.Descriptor{entry(images.MediaTypeOCIIndex, "nested", nil)}, "nested", images.RoleIndex},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, d := index(t, tc.entries...)
			p, err := images.ParsePlatform(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			children, err := images.Children(b, d, p)
			if err != nil {
				t.Fatal(err)
			}
			if len(children) != 1 || children[0].Descriptor.Digest != digest.FromString(tc.want) || children[0].Role != tc.wantRole {
				t.Errorf("chose %+v, want %q (%s)", children, tc.want, tc.wantRole)
			}
		})
	}
	b, d := index(t)
	_, err := images.Children(b, d, images.DefaultPlatform())
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "available: none") {
		t.Errorf("empty index: %v", err)
	}
}

func TestChildrenRejects(t *testing.T) {
	host := images.DefaultPlatform()
	good := built(t, &testimage.Image{Layers: []*testimage.Layer{layer(t, testimage.Gzip, "x")}})
	manifestDesc := good.Manifest
	manifestDesc.Platform = nil

	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good.ManifestBytes, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerField := func(k string, v any) func(m map[string]any) {
		return func(m map[string]any) { m["layers"].([]any)[0].(map[string]any)[k] = v }
	}
	idxBytes := []byte(`{"schemaVersion":2,"manifests":[]}`)
	cases := []struct {
		name  string
		blob  []byte
		mt    string
		class error
		say   string
	}{
		{"index bytes as manifest", idxBytes, images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "index, not a manifest"},
		{"manifest bytes as index", good.ManifestBytes, images.MediaTypeOCIIndex, errdefs.ErrInvalidArgument, "mediaType field"},
		{"manifest as docker manifest", good.ManifestBytes, images.MediaTypeDockerManifest, errdefs.ErrInvalidArgument, "mediaType field"},
		{"docker without mediaType", mutate(func(m map[string]any) { delete(m, "mediaType") }), images.MediaTypeDockerManifest, errdefs.ErrInvalidArgument, "mediaType field"},
		{"schema version", mutate(func(m map[string]any) { m["schemaVersion"] = 1 }), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "schemaVersion"},
		{"bad layer digest", mutate(layerField("digest", "sha256:abc")), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "layers[0]"},
		{"negative layer size", mutate(layerField("size", -1)), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "negative size"},
		{"unknown layer type", mutate(layerField("mediaType", "application/x-tar+lz4")), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "not a layer type"},
		{"no config", mutate(func(m map[string]any) { delete(m, "config") }), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "no config"},
		{"artifact config", mutate(func(m map[string]any) {
			m["config"].(map[string]any)["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
		}), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "not a container image"},
		{"not json", []byte("{nope"), images.MediaTypeOCIManifest, errdefs.ErrInvalidArgument, "not valid JSON"},
		{"schema 1", []byte(`{"schemaVersion":1,"fsLayers":[]}`), images.MediaTypeDockerSchema1SignedManifest, errdefs.ErrInvalidArgument, "schema 1"},
		{"layer media type", good.ManifestBytes, images.MediaTypeOCILayerGzip, errdefs.ErrInvalidArgument, "neither an image index nor a manifest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := images.Children(tc.blob, descOf(tc.mt, tc.blob), host)
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.say) {
				t.Errorf("error = %v, want %v saying %q", err, tc.class, tc.say)
			}
		})
	}

	t.Run("over the limit", func(t *testing.T) {
		_, err := images.ChildrenLimit(good.ManifestBytes, manifestDesc, host, 100)
		if !errors.Is(err, errdefs.ErrResourceExhausted) {
			t.Errorf("error = %v, want ErrResourceExhausted", err)
		}
		huge := manifestDesc
		huge.Size = images.DefaultMaxManifestSize + 1
		if _, err := images.Children(good.ManifestBytes, huge, host); !errors.Is(err, errdefs.ErrResourceExhausted) {
			t.Errorf("declared size over the default limit: %v, want ErrResourceExhausted", err)
		}
	})
	t.Run("bytes do not match the descriptor", func(t *testing.T) {
		d := manifestDesc
		d.Size--
		if _, err := images.Children(good.ManifestBytes, d, host); !errors.Is(err, errdefs.ErrDataLoss) {
			t.Errorf("wrong size: %v, want ErrDataLoss", err)
		}
		d = manifestDesc
		d.Digest = digest.FromString("other")
		if _, err := images.Children(good.ManifestBytes, d, host); !errors.Is(err, errdefs.ErrDataLoss) {
			t.Errorf("wrong digest: %v, want ErrDataLoss", err)
		}
		d = manifestDesc
		d.Digest = "md5:abc"
		if _, err := images.Children(good.ManifestBytes, d, host); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("invalid digest: %v, want ErrInvalidArgument", err)
		}
	})
}

func TestSniffMediaType(t *testing.T) {
	good := built(t, &testimage.Image{Format: testimage.Docker})
	idx, _ := index(t)
	for blob, want := range map[string]string{
		string(good.ManifestBytes):           images.MediaTypeDockerManifest,
		string(idx):                          images.MediaTypeOCIIndex,
		`{"schemaVersion":2,"config":{}}`:    images.MediaTypeOCIManifest,
		`{"schemaVersion":2,"manifests":[]}`: images.MediaTypeOCIIndex,
		`{"schemaVersion":1,"fsLayers":[]}`:  images.MediaTypeDockerSchema1Manifest,
		`{}`:                                 "",
		`nope`:                               "",
	} {
		if got := images.SniffMediaType([]byte(blob)); got != want {
			t.Errorf("SniffMediaType(%s) = %q, want %q", blob, got, want)
		}
	}
}

func TestParseConfig(t *testing.T) {
	l1, l2 := layer(t, testimage.Gzip, "1"), layer(t, testimage.Zstd, "2")
	created := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	var cfg ocispec.Image
	cfg.Created = &created
	b := built(t, &testimage.Image{Layers: []*testimage.Layer{l1, l2}, Config: cfg})
	gotCreated, diffIDs, err := images.ParseConfig(b.ConfigBytes)
	if err != nil {
		t.Fatal(err)
	}
	if gotCreated == nil || !gotCreated.Equal(created) {
		t.Errorf("created = %v, want %v", gotCreated, created)
	}
	if len(diffIDs) != 2 || diffIDs[0] != l1.DiffID || diffIDs[1] != l2.DiffID {
		t.Errorf("diffIDs = %v", diffIDs)
	}

	c, ids, err := images.ParseConfig([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	if err != nil || c != nil || len(ids) != 0 {
		t.Errorf("config without created: %v %v %v", c, ids, err)
	}
	for name, tc := range map[string]struct {
		blob  string
		class error
	}{
		"not json":    {`{`, errdefs.ErrInvalidArgument},
		"rootfs type": {`{"rootfs":{"type":"other","diff_ids":[]}}`, errdefs.ErrInvalidArgument},
		"no rootfs":   {`{"os":"linux"}`, errdefs.ErrInvalidArgument},
		"bad diff id": {`{"rootfs":{"type":"layers","diff_ids":["sha256:xyz"]}}`, errdefs.ErrInvalidArgument},
		"bad created": {`{"created":"yesterday","rootfs":{"type":"layers"}}`, errdefs.ErrInvalidArgument},
		"too large":   {`{"pad":"` + strings.Repeat("x", images.DefaultMaxConfigSize) + `"}`, errdefs.ErrResourceExhausted},
	} {
		if _, _, err := images.ParseConfig([]byte(tc.blob)); !errors.Is(err, tc.class) {
			t.Errorf("%s: error = %v, want %v", name, err, tc.class)
		}
	}
}

func TestConfigPlatform(t *testing.T) {
	amd64 := images.Platform{OS: "linux", Architecture: "amd64"}
	armv7 := images.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	tests := []struct {
		config string
		want   images.Platform
		got    string // "" for an error
	}{
		{`{"os":"linux","architecture":"amd64"}`, amd64, "linux/amd64"},
		{`{"os":"linux","architecture":"x86_64"}`, amd64, "linux/amd64"},
		{`{}`, amd64, "linux/amd64"},
		{`{"os":"linux","architecture":"arm"}`, armv7, "linux/arm/v7"},
		{`{"os":"linux","architecture":"arm","variant":"v7"}`, armv7, "linux/arm/v7"},
		{`{"os":"linux","architecture":"arm","variant":"v6"}`, armv7, ""},
		{`{"os":"linux","architecture":"arm64"}`, amd64, ""},
		{`{"os":"windows","architecture":"amd64"}`, amd64, ""},
	}
	for _, tt := range tests {
		got, err := images.ConfigPlatform([]byte(tt.config), tt.want)
		switch {
		case tt.got == "" && !errors.Is(err, errdefs.ErrNotFound):
			t.Errorf("ConfigPlatform(%s, %s) = %s, %v; want not_found", tt.config, tt.want, got, err)
		case tt.got != "" && (err != nil || got.String() != tt.got):
			t.Errorf("ConfigPlatform(%s, %s) = %s, %v; want %s", tt.config, tt.want, got, err, tt.got)
		}
	}
	if _, err := images.ConfigPlatform([]byte("not json"), amd64); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ConfigPlatform(junk) = %v, want invalid argument", err)
	}
}
