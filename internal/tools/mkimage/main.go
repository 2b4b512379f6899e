// Command mkimage builds a small busybox image from a busybox binary on this
// machine and pushes it to a registry, for the quick start and benchmarks
// (no image has to come from the internet).
//
//	mkimage [--busybox /bin/busybox] [--zstd] [--docker] HOST/REPO:TAG
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

// applets linked to busybox in /bin.
var applets = []string{"sh", "ls", "cat", "echo", "true", "false", "sleep", "id", "env", "pwd", "mkdir", "rm", "touch", "ps", "uname", "hostname", "wc", "head", "tail", "grep", "sed", "date", "kill", "whoami", "stat", "find", "du", "df", "mount"}

func main() {
	bb := flag.String("busybox", "/bin/busybox", "busybox binary (a static one: Debian's busybox-static)")
	zstd := flag.Bool("zstd", false, "compress the layer with zstd instead of gzip")
	docker := flag.Bool("docker", false, "use Docker schema 2 media types instead of OCI")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: mkimage [flags] HOST/REPO:TAG\n\nBuilds a busybox image and pushes it to the registry at HOST.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(context.Background(), flag.Arg(0), *bb, *zstd, *docker); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, ref, bbPath string, zstd, docker bool) error {
	host, repoTag, ok := strings.Cut(ref, "/")
	if !ok {
		return fmt.Errorf("reference %q: want HOST/REPO:TAG", ref)
	}
	bin, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("busybox binary: %w (install busybox-static)", err)
	}
	entries := []testimage.Entry{
		testimage.Dir("bin", 0o755), testimage.Dir("etc", 0o755), testimage.Dir("tmp", 0o1777),
		testimage.Dir("root", 0o700), testimage.Dir("home", 0o755), testimage.Dir("home/app", 0o755),
		testimage.File("bin/busybox", bin, 0o755),
		testimage.File("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644),
		testimage.File("etc/group", []byte("root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"), 0o644),
	}
	for _, a := range applets {
		entries = append(entries, testimage.Hardlink("bin/"+a, "bin/busybox"))
	}
	c := testimage.Gzip
	if zstd {
		c = testimage.Zstd
	}
	layer, err := testimage.NewLayer(c, entries...)
	if err != nil {
		return err
	}
	format := testimage.OCI
	if docker {
		format = testimage.Docker
	}
	created := time.Now().UTC().Truncate(time.Second)
	img := &testimage.Image{
		Format: format,
		Layers: []*testimage.Layer{layer},
		Config: ocispec.Image{
			Created:  &created,
			Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
			Config: ocispec.ImageConfig{
				Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Cmd:        []string{"sh"},
				WorkingDir: "/",
			},
		},
	}
	desc, err := testimage.Push(ctx, host, repoTag, img)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	fmt.Printf("pushed %s %s (%d-byte layer, %s)\n", ref, desc.Digest, len(layer.Blob), c)
	return nil
}
