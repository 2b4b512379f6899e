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
	"strings"

	"github.com/stevedore/stevedore/internal/testutil/testimage"
)

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
	c, format := testimage.Gzip, testimage.OCI
	if zstd {
		c = testimage.Zstd
	}
	if docker {
		format = testimage.Docker
	}
	img, err := testimage.Busybox(bbPath, c, format)
	if err != nil {
		return err
	}
	desc, err := testimage.Push(ctx, host, repoTag, img)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	fmt.Printf("pushed %s %s (%d-byte layer, %s)\n", ref, desc.Digest, len(img.Layers[0].Blob), c)
	return nil
}
