package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) opsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "ops",
		Aliases: []string{"op", "operations"},
		Short:   "Inspect operations",
		Long: `An operation is everything one command caused: a pull, a removal. Commands
that start one follow it until it ends; "ctl ops get" shows its state later,
for example after Ctrl-C stopped ctl from waiting.`,
		Example: `  ctl ops get 3Y1Bq4zGmTmY0aPZ2xHkQe`,
		Args:    cobra.NoArgs,
		RunE:    groupHelp,
	}
	var format string
	get := &cobra.Command{
		Use:   "get [flags] ID",
		Short: "Show one operation",
		Long: `Show the operation's kind, reference, state (running, completed or failed),
who started it, when, and why it failed if it did.`,
		Example: `  ctl ops get 3Y1Bq4zGmTmY0aPZ2xHkQe
  ctl ops get --format json 3Y1Bq4zGmTmY0aPZ2xHkQe | jq -r .state`,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			op, err := c.Operation(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("ops get %s: %w", args[0], err)
			}
			if format == "json" {
				return writeJSON(a.stdout, op)
			}
			tw := newTable(a.stdout, "ID", op.ID)
			row(tw, "KIND", orDash(op.Kind))
			row(tw, "REF", orDash(op.Ref))
			row(tw, "STATE", op.State)
			if op.Code != "" || op.Message != "" {
				row(tw, "ERROR", fmt.Sprintf("%s (%s)", op.Message, op.Code))
			}
			row(tw, "ACTOR", orDash(op.Actor))
			row(tw, "STARTED", stamp(op.StartedAt))
			row(tw, "ENDED", stamp(op.EndedAt))
			return flush(tw)
		},
	}
	get.Flags().StringVar(&format, "format", "", formatFlagHelp)
	cmd.AddCommand(get)
	return cmd
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339) + " (" + ago(time.Now(), t) + ")"
}
