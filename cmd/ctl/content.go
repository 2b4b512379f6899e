package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/content"
	"github.com/stevedore/stevedore/pkg/progress"
)

func (a *app) contentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "content",
		Short: "Inspect and remove blobs in the content store",
		Long: `Blobs in the gateway node's content store, addressed by digest. A DIGEST
argument is "sha256:<hex>" or the bare hex.`,
		Example: `  ctl content ls
  ctl content info sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1
  ctl content get sha256:4bcf… | jq .
  ctl content rm sha256:4bcf…
  ctl content active`,
		Args: cobra.NoArgs,
		RunE: groupHelp,
	}
	cmd.AddCommand(a.contentLsCmd(), a.contentInfoCmd(), a.contentGetCmd(), a.contentRmCmd(), a.contentActiveCmd())
	return cmd
}

func (a *app) contentLsCmd() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List committed blobs",
		Long:    `List the committed blobs: DIGEST, SIZE, AGE (since committed) and LABELS.`,
		Example: `  ctl content ls
  ctl content ls -q
  ctl content ls --format json | jq '[.[].size] | add'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			blobs, err := c.ContentList(cmd.Context())
			if err != nil {
				return fmt.Errorf("content ls: %w", err)
			}
			if blobs == nil {
				blobs = []content.Info{}
			}
			switch {
			case format == "json":
				return writeJSON(a.stdout, blobs)
			case quiet:
				for _, b := range blobs {
					fmt.Fprintln(a.stdout, b.Digest)
				}
				return nil
			}
			now := time.Now()
			tw := newTable(a.stdout, "DIGEST", "SIZE", "AGE", "LABELS")
			for _, b := range blobs {
				row(tw, b.Digest.String(), progress.Bytes(b.Size), ago(now, b.CreatedAt), labels(b.Labels))
			}
			return flush(tw)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print digests only")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func (a *app) contentInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "info DIGEST",
		Short:   "Describe one blob as JSON",
		Long:    `Print the blob's digest, size, times and labels as one JSON object.`,
		Example: `  ctl content info sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1`,
		Args:    exactArgs(1, "DIGEST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDigest(args[0])
			if err != nil {
				return fmt.Errorf("content info: %w", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			info, err := c.ContentInfo(cmd.Context(), d)
			if err != nil {
				return fmt.Errorf("content info %s: %w", d, err)
			}
			return writeJSON(a.stdout, info)
		},
	}
}

func (a *app) contentGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get DIGEST",
		Short: "Write a blob's bytes to stdout",
		Long: `Write the raw bytes of the blob to stdout, verified against the digest: if
they do not match, ctl fails after writing them.`,
		Example: `  ctl content get sha256:4bcf… | jq .
  ctl content get sha256:9f3a… > layer.tar.gz`,
		Args: exactArgs(1, "DIGEST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := parseDigest(args[0])
			if err != nil {
				return fmt.Errorf("content get: %w", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			rc, err := c.ContentReader(cmd.Context(), d)
			if err != nil {
				return fmt.Errorf("content get %s: %w", d, err)
			}
			defer rc.Close()
			if _, err := io.Copy(a.stdout, rc); err != nil {
				return fmt.Errorf("content get %s: %w", d, err)
			}
			return nil
		},
	}
}

func (a *app) contentRmCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:     "rm [flags] DIGEST...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove blobs from the content store",
		Long: `Ask for each blob to be removed and wait until it is (or until the removal
fails, for example because an image still uses the blob). Each removed
digest is printed. If --wait passes first, ctl stops waiting; the removal
goes on in the system.`,
		Example: `  ctl content rm sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1
  ctl content ls -q | xargs ctl content rm`,
		Args: needArgs(1, "DIGEST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait <= 0 {
				return fmt.Errorf("content rm: --wait must be positive, got %v", wait)
			}
			return a.contentRemove(cmd.Context(), args, wait)
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "how long to wait for each removal to be done")
	return cmd
}

func (a *app) contentRemove(ctx context.Context, args []string, wait time.Duration) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var errs []error
	for _, arg := range args {
		d, err := parseDigest(arg)
		if err != nil {
			errs = append(errs, fmt.Errorf("content rm: %w", err))
			continue
		}
		op, err := c.ContentDelete(ctx, d)
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, wait)
			_, err = c.Wait(wctx, op, nil)
			cancel()
			if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("not removed after %v; the removal goes on in the system (`ctl ops get %s` shows how it ends)", wait, op.Operation)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("content rm %s: %w", d, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		fmt.Fprintln(a.stdout, d)
	}
	return errors.Join(errs...)
}

func (a *app) contentActiveCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "active",
		Short: "List downloads in progress",
		Long: `List the active ingests on the gateway's node: the ingest REF, the bytes
written so far out of the expected SIZE/TOTAL, and the AGE since it started.`,
		Example: `  ctl content active
  watch -n1 ctl content active`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			active, err := c.ContentActive(cmd.Context())
			if err != nil {
				return fmt.Errorf("content active: %w", err)
			}
			if active == nil {
				active = []content.Status{}
			}
			if format == "json" {
				return writeJSON(a.stdout, active)
			}
			now := time.Now()
			tw := newTable(a.stdout, "REF", "SIZE/TOTAL", "AGE")
			for _, s := range active {
				row(tw, s.Ref, progress.Bytes(s.Offset)+"/"+progress.Bytes(s.Total), ago(now, s.StartedAt))
			}
			return flush(tw)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}
