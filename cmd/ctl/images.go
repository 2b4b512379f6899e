package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/progress"
)

func (a *app) imagesCmd() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	list := func(cmd *cobra.Command, _ []string) error {
		if err := checkFormat(format); err != nil {
			return err
		}
		return a.imagesList(cmd.Context(), quiet, format)
	}
	listFlags := func(cmd *cobra.Command) {
		cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print image names only")
		cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	}
	const listLong = `List the images of the namespace: their name (REF), the media type of the
target (TYPE: an index or a manifest), its DIGEST, the SIZE of every blob
of the image on its platform, when the image was CREATED (from its config),
its PLATFORM, and whether it is UNPACKED on the node (--node, by default this
host): "yes" when every layer of its target is a snapshot there, so a
container can start from it; "no" when it was pulled with --no-unpack,
unpacked elsewhere, or its snapshots were removed.

--format json prints the images as a JSON array; "unpacked" lists every node
the image is unpacked on.`
	const listExample = `  ctl images
  ctl images -q
  ctl --node build-02 images
  ctl images --format json | jq -r '.[].name'
  ctl images --format json | jq -r '.[] | select(.unpacked | length == 0) | .name'`

	cmd := &cobra.Command{
		Use:     "images",
		Aliases: []string{"image"},
		Short:   "List and remove images",
		Long:    listLong + "\n\nSubcommands: ls (the default) and rm.",
		Example: listExample + "\n  ctl images rm alpine:3.20",
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listFlags(cmd)
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List images",
		Long:    listLong,
		Example: listExample,
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listFlags(ls)
	rm := &cobra.Command{
		Use:     "rm [flags] REF...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove image names",
		Long: `Remove the image names REF... from the namespace. The blobs they point at
stay in the content store and their layers' snapshots on the nodes; "ctl
content rm" removes blobs and "ctl snapshots rm" snapshots.

Each removed name is printed. A name that is not there is an error; the
other names are still removed.`,
		Example: `  ctl images rm alpine:3.20
  ctl images rm $(ctl images -q)`,
		Args: needArgs(1, "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.imagesRemove(cmd.Context(), args)
		},
	}
	cmd.AddCommand(ls, rm)
	return cmd
}

func (a *app) imagesList(ctx context.Context, quiet bool, format string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	imgs, err := c.ImagesList(ctx)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if imgs == nil {
		imgs = []api.Image{}
	}
	switch {
	case format == "json":
		return writeJSON(a.stdout, imagesJSON(imgs))
	case quiet:
		for _, img := range imgs {
			fmt.Fprintln(a.stdout, img.Name)
		}
		return nil
	}
	now := time.Now()
	tw := newTable(a.stdout, "REF", "TYPE", "DIGEST", "SIZE", "CREATED", "PLATFORM", "UNPACKED")
	for _, img := range imgs {
		created := "-"
		if img.Created != nil {
			created = ago(now, *img.Created)
		}
		unpacked := "no"
		if slices.Contains(img.Unpacked, a.node) {
			unpacked = "yes"
		}
		row(tw, img.Name, orDash(img.Target.MediaType), orDash(img.Target.Digest.String()),
			progress.Bytes(img.Size), created, orDash(img.Platform), unpacked)
	}
	return flush(tw)
}

// imageJSON is an image as `images --format json` prints it: "unpacked" is
// always there, an empty array when the image is unpacked nowhere.
type imageJSON struct {
	api.Image
	Unpacked []string `json:"unpacked"`
}

func imagesJSON(imgs []api.Image) []imageJSON {
	out := make([]imageJSON, len(imgs))
	for i, img := range imgs {
		out[i] = imageJSON{Image: img, Unpacked: img.Unpacked}
		if out[i].Unpacked == nil {
			out[i].Unpacked = []string{}
		}
	}
	return out
}

func (a *app) imagesRemove(ctx context.Context, names []string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if _, err := c.ImageRemove(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("images rm %s: %w", name, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		fmt.Fprintln(a.stdout, name)
	}
	return errors.Join(errs...)
}
