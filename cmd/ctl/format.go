package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/errdefs"
)

// formatFlagHelp is the help of every --format flag.
const formatFlagHelp = `output format: "json" for machine-readable output; empty for a table`

// checkFormat accepts the --format values ctl knows.
func checkFormat(f string) error {
	switch f {
	case "", "json":
		return nil
	}
	return fmt.Errorf("--format %q: %w: the only format is json", f, errdefs.ErrInvalidArgument)
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

// newTable returns a tabwriter laid out like docker's tables; Flush it.
func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }

func flush(tw *tabwriter.Writer) error {
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// ago formats the time since t as docker does ("3 days ago"); "-" for the
// zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// humanDuration approximates d in words, like docker's CREATED column.
func humanDuration(d time.Duration) string {
	if s := int(d.Seconds()); s < 1 {
		return "Less than a second"
	} else if s == 1 {
		return "1 second"
	} else if s < 60 {
		return fmt.Sprintf("%d seconds", s)
	}
	if m := int(d.Minutes()); m == 1 {
		return "About a minute"
	} else if m < 60 {
		return fmt.Sprintf("%d minutes", m)
	}
	if h := int(d.Round(time.Hour).Hours()); h == 1 {
		return "About an hour"
	} else if h < 48 {
		return fmt.Sprintf("%d hours", h)
	} else if h < 24*7*2 {
		return fmt.Sprintf("%d days", h/24)
	} else if h < 24*30*2 {
		return fmt.Sprintf("%d weeks", h/24/7)
	} else if h < 24*365*2 {
		return fmt.Sprintf("%d months", h/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

// labels formats labels as sorted k=v pairs; "-" for none.
func labels(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var bareHex = regexp.MustCompile(`^[a-f0-9]{64}$`)

// parseDigest accepts "sha256:<hex>" or a bare sha256 hex.
func parseDigest(s string) (digest.Digest, error) {
	if bareHex.MatchString(s) {
		s = "sha256:" + s
	}
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a digest (want sha256:<64 hex digits>): %w", s, errdefs.ErrInvalidArgument)
	}
	return d, nil
}
