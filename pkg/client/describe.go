package client

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/events"
)

// bareHex is a sha256 digest's hex: a blob aggregate id, or a layer
// snapshot's.
var bareHex = regexp.MustCompile(`^[a-f0-9]{64}$`)

// ShortDigest abbreviates a digest to its algorithm and first 12 hex
// digits: "sha256:5e6f0a1b2c3d…". Anything else is returned as is.
func ShortDigest(d digest.Digest) string {
	alg, hex, ok := strings.Cut(string(d), ":")
	if !ok || len(hex) <= 12 {
		return string(d)
	}
	return alg + ":" + hex[:12] + "…"
}

// DescribeAggregate names what ev is about, decoded for people: "image
// docker.io/library/alpine:3.20", "blob sha256:5e6f0a1b2c3d…", "container
// web", "pull 3Y1Bq4zG", "snapshot sha256:…".
func DescribeAggregate(ev *events.Envelope) string {
	kind, id := ev.Aggregate.Kind, ev.Aggregate.ID
	switch kind {
	case events.KindImage:
		if name, err := events.DecodeToken(id); err == nil {
			id = name
		}
	case events.KindBlob, events.KindSnapshot:
		if bareHex.MatchString(id) {
			id = ShortDigest(digest.NewDigestFromEncoded(digest.SHA256, id))
		} else if key, err := events.DecodeToken(id); err == nil && kind == events.KindSnapshot {
			id = key
		}
	}
	if kind == "" {
		return id
	}
	return kind + " " + id
}

// Summary says in a few words what ev's payload records, e.g. "layer
// sha256:5e6f0a1b2c3d… 4.2 MiB" or "exit 137 (SIGKILL, oom)". It is ""
// for an event with nothing to add, and says so for a payload it cannot
// read.
func Summary(ev *events.Envelope) string {
	s, err := summary(ev)
	if err != nil {
		return "(unreadable payload)"
	}
	return s
}

func summary(ev *events.Envelope) (string, error) {
	switch ev.Type {
	case events.TypePullRequested:
		var p events.PullRequested
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		s := p.Ref
		if p.Platform != "" {
			s += " " + p.Platform
		}
		if p.Unpack {
			s += " unpack"
		}
		return s, nil
	case events.TypeDescriptorResolved:
		var p events.DescriptorResolved
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return p.Role + " " + ShortDigest(p.Descriptor.Digest) + " " + Bytes(p.Descriptor.Size), nil
	case events.TypeBlobCommitted:
		var p events.BlobCommitted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		s := p.Role + " " + ShortDigest(p.Descriptor.Digest) + " " + Bytes(p.Descriptor.Size)
		switch {
		case p.Existing:
			s += " (already there)"
		case p.Duration > 0:
			s += fmt.Sprintf(" (fetched %s in %s)", Bytes(p.Fetched), RoundDuration(p.Duration))
		}
		return s, nil
	case events.TypeImageUpdated:
		var p events.ImageUpdated
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return "→ " + ShortDigest(p.Target.Digest) + " " + Bytes(p.Size) + " " + p.Platform, nil
	case events.TypePullCompleted:
		var p events.PullCompleted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %s %s, %d blobs", p.Ref, ShortDigest(p.Target), Bytes(p.Size), p.Blobs), nil
	case events.TypePullFailed:
		var p events.PullFailed
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return failed(p.Message, p.Code), nil
	case events.TypeImageDeleted:
		var p events.ImageDeleted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return p.Name, nil
	case events.TypeContentDeleteRequested, events.TypeBlobDeleted:
		var p events.BlobDeleted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return ShortDigest(p.Digest), nil
	case events.TypeContentDeleteFailed:
		var p events.ContentDeleteFailed
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return failed(p.Message, p.Code), nil
	case events.TypeUnpackRequested:
		var p events.UnpackRequested
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d layers of %s", len(p.Layers), ShortDigest(p.Manifest)), nil
	case events.TypeLayerApplied:
		var p events.LayerApplied
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		s := fmt.Sprintf("layer %d %s %s", p.Index, ShortDigest(p.Layer), Bytes(p.Size))
		switch {
		case p.Existing:
			s += " (already there)"
		case p.Duration > 0:
			s += " in " + RoundDuration(p.Duration).String()
		}
		return s, nil
	case events.TypeImageUnpacked:
		var p events.ImageUnpacked
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d layers, %s, top %s", p.Layers, p.Snapshotter, ShortDigest(p.ChainID)), nil
	case events.TypeSnapshotRemoved:
		var p events.SnapshotRemoved
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		if d, err := digest.Parse(p.Key); err == nil {
			return ShortDigest(d), nil
		}
		return p.Key, nil
	case events.TypeContainerCreateRequested:
		var p events.ContainerCreateRequested
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		s := p.Image
		if p.Node != "" {
			s += " on " + p.Node
		}
		if p.Start {
			s += ", start"
		}
		if p.Rm {
			s += ", rm"
		}
		return s, nil
	case events.TypeContainerCreated:
		var p events.ContainerCreated
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return p.Image + " " + ShortDigest(p.ImageDigest), nil
	case events.TypeContainerCreateFailed, events.TypeTaskStartFailed, events.TypeContainerDeleteFailed:
		var p events.Failure
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return failed(p.Message, p.Code), nil
	case events.TypeContainerCreateRefused:
		var p events.ContainerCreateRefused
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return p.Image + " " + failed(p.Message, p.Code), nil
	case events.TypeTaskStarted:
		var p events.TaskStarted
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return fmt.Sprintf("pid %d", p.Pid), nil
	case events.TypeTaskKillRequested:
		var p events.TaskKillRequested
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return "signal " + p.Signal, nil
	case events.TypeTaskExited:
		var p events.TaskExited
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		return ExitSummary(p), nil
	case events.TypeContainerDeleteRequested:
		var p events.ContainerDeleteRequested
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		if p.Force {
			return "force", nil
		}
		return "", nil
	case events.TypeContainerLabelsUpdated:
		var p events.ContainerLabelsUpdated
		if err := ev.Decode(&p); err != nil {
			return "", err
		}
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			kv = append(kv, k+"="+p.Labels[k])
		}
		if len(kv) == 0 {
			return "no labels", nil
		}
		return strings.Join(kv, ","), nil
	}
	return "", nil
}

// ExitSummary describes a task's exit: "exit 0", "exit 137 (SIGKILL, oom)".
func ExitSummary(p events.TaskExited) string {
	s := fmt.Sprintf("exit %d", p.Code)
	var why []string
	if p.Signal != "" {
		why = append(why, p.Signal)
	}
	if p.OOMKilled {
		why = append(why, "oom")
	}
	if len(why) > 0 {
		s += " (" + strings.Join(why, ", ") + ")"
	}
	return s
}

func failed(msg, code string) string {
	if code == "" {
		return "failed: " + msg
	}
	return "failed: " + msg + " (" + code + ")"
}

// RoundDuration keeps a duration short: milliseconds from a second up,
// microseconds below.
func RoundDuration(d time.Duration) time.Duration {
	if d >= time.Second || d <= -time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

// Bytes formats n bytes in binary units: "512 B", "4.2 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
