package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stevedore/stevedore/pkg/api"
	"github.com/stevedore/stevedore/pkg/client"
	"github.com/stevedore/stevedore/pkg/progress"
)

func (a *app) snapshotsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "snapshots",
		Aliases: []string{"snapshot", "snap"},
		Short:   "Inspect and remove a node's snapshots",
		Long: `Snapshots are image layers unpacked on one node, made by the node's unpacker
when an image is pulled: one committed snapshot per layer, keyed by the
layer's chainID ("sha256:<hex>"), whose parent is the snapshot of the layer
below it. Active snapshots are writable layers on top, such as a container's
rootfs.

The commands ask the unpacker of the node --node names (env STEVEDORE_NODE;
by default this host's name with dots as dashes). If none answers, ctl says
so: is an unpacker running there, under that name?`,
		Example: `  ctl snapshots ls
  ctl --node build-02 snap ls --format json
  ctl snapshots mounts sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
  ctl snapshots rm sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef`,
		Args: cobra.NoArgs,
		RunE: groupHelp,
	}
	cmd.AddCommand(a.snapshotsLsCmd(), a.snapshotsMountsCmd(), a.snapshotsRmCmd())
	return cmd
}

func (a *app) snapshotsLsCmd() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List a node's snapshots",
		Long: `List the node's snapshots: the KEY (a layer's chainID for committed
snapshots), the PARENT key (empty for a base layer), the KIND (committed,
active or view), the SIZE on disk and when it was CREATED.

--format json prints them as a JSON array, with their inode counts and
labels (a layer's snapshot names its layer blob and diff ID).`,
		Example: `  ctl snapshots ls
  ctl snap ls -q
  ctl --node build-02 snapshots ls
  ctl snapshots ls --format json | jq '[.[].size] | add'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.SnapshotsList(cmd.Context(), a.node)
			if err != nil {
				return fmt.Errorf("snapshots ls: %w", err)
			}
			snaps := r.Snapshots
			if snaps == nil {
				snaps = []api.Snapshot{}
			}
			switch {
			case format == "json":
				return writeJSON(a.stdout, snaps)
			case quiet:
				for _, s := range snaps {
					fmt.Fprintln(a.stdout, s.Key)
				}
				return nil
			}
			now := time.Now()
			tw := newTable(a.stdout, "KEY", "PARENT", "KIND", "SIZE", "CREATED")
			for _, s := range snaps {
				row(tw, s.Key, orDash(s.Parent), orDash(s.Kind), progress.Bytes(s.Size), ago(now, s.Created))
			}
			return flush(tw)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print keys only")
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

func (a *app) snapshotsMountsCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "mounts [flags] KEY [TARGET]",
		Short: "Print how to mount a snapshot",
		Long: `Print the mount(8) command that mounts snapshot KEY on the directory TARGET,
to run as root on the node (the paths are the node's). Without TARGET the
command has the placeholder <target> where the mount point goes, for you to
replace.

--format json prints the mounts as data instead: a JSON array of
{"type", "source", "options"}, one per mount, applied in order.`,
		Example: `  ctl snapshots mounts sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
  sudo sh -c "$(ctl snapshots mounts sha256:5f70… /mnt/layer)"
  ctl snapshots mounts --format json sha256:5f70… | jq -r '.[0].options[]'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fmt.Errorf("%s: missing KEY (see `%s --help`)", name(cmd), cmd.CommandPath())
			}
			if len(args) > 2 {
				return fmt.Errorf("%s: too many arguments: want KEY and at most a TARGET, got %q (see `%s --help`)", name(cmd), args, cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			key, target := args[0], ""
			if len(args) == 2 {
				target = args[1]
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.SnapshotMounts(cmd.Context(), a.node, key)
			if err != nil {
				return fmt.Errorf("snapshots mounts %s: %w", key, err)
			}
			if format == "json" {
				mounts := r.Mounts
				if mounts == nil {
					mounts = []api.Mount{}
				}
				return writeJSON(a.stdout, mounts)
			}
			line := mountCommand(r, target)
			if line == "" {
				return fmt.Errorf("snapshots mounts %s: the unpacker on %s gave no mounts", key, a.node)
			}
			fmt.Fprintln(a.stdout, line)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "", formatFlagHelp)
	return cmd
}

// mountPlaceholder stands for the mount point in a command without one, as
// in the unpacker's own command line.
const mountPlaceholder = "<target>"

// mountCommand returns the shell command that mounts r on target: the
// unpacker's own command line when no target is given, else one mount(8)
// command per mount, joined with &&.
func mountCommand(r api.SnapshotMountsReply, target string) string {
	if target == "" && r.Command != "" {
		return r.Command
	}
	if target == "" {
		target = mountPlaceholder
	} else {
		target = shellQuote(target)
	}
	var cmds []string
	for _, m := range r.Mounts {
		parts := []string{"mount"}
		if m.Type != "" {
			parts = append(parts, "-t", shellQuote(m.Type))
		}
		if len(m.Options) > 0 {
			parts = append(parts, "-o", shellQuote(strings.Join(m.Options, ",")))
		}
		parts = append(parts, shellQuote(m.Source), target)
		cmds = append(cmds, strings.Join(parts, " "))
	}
	return strings.Join(cmds, " && ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+-]+$`)

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) snapshotsRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm KEY...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove snapshots from a node",
		Long: `Remove the snapshots KEY... from the node. The unpacker refuses to remove a
snapshot that is the parent of another snapshot or that a container uses:
remove the child (or the container) first. Each removed key is printed; a key
that cannot be removed is an error (ctl prints why and exits with status 1),
and the other keys are still removed.

Removing an image's top snapshot makes the image no longer UNPACKED on the
node ("ctl images"); pulling it again unpacks it again. The layer blobs stay
in the content store.`,
		Example: `  ctl snapshots rm sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
  ctl --node build-02 snapshots rm sha256:5f70… sha256:9c1d…`,
		Args: needArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.snapshotsRemove(cmd.Context(), args)
		},
	}
}

func (a *app) snapshotsRemove(ctx context.Context, keys []string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var errs []error
	for _, key := range keys {
		if _, err := c.SnapshotRemove(ctx, a.node, key); err != nil {
			errs = append(errs, fmt.Errorf("snapshots rm %s: %w", key, err))
			if nu := (*client.NoUnpackerError)(nil); ctx.Err() != nil || errors.As(err, &nu) {
				break // the other keys would fail the same way
			}
			continue
		}
		fmt.Fprintln(a.stdout, key)
	}
	return errors.Join(errs...)
}
