package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/errdefs"
	"github.com/stevedore/stevedore/pkg/events"
)

func TestSubjectsRoundTrip(t *testing.T) {
	for _, name := range []string{"127.0.0.1:5000/demo/busybox:latest", "docker.io/library/alpine@sha256:abc", "a b.c*>"} {
		agg := events.ImageAggregate(name)
		if strings.ContainsAny(agg.ID, ".*> \t") {
			t.Errorf("token %q for %q has a character subjects cannot carry", agg.ID, name)
		}
		back, err := events.DecodeToken(agg.ID)
		if err != nil || back != name {
			t.Errorf("decode %q = %q, %v; want %q", agg.ID, back, err, name)
		}
		for _, node := range []string{"", "build-7"} {
			ev, err := events.New(events.Meta{Namespace: "default", Node: node}, events.TypeImageUpdated, agg, events.ImageUpdated{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			ns, kind, id, typ, gotNode, err := events.ParseSubject(ev.Subject())
			if err != nil || ns != "default" || kind != events.KindImage || id != agg.ID || typ != events.TypeImageUpdated || gotNode != node {
				t.Errorf("ParseSubject(%q) = %s %s %s %s %s %v", ev.Subject(), ns, kind, id, typ, gotNode, err)
			}
		}
	}
	for _, bad := range []string{"sd.evt.default.blob", "sd.evt.default.blob.abc.blob-committed", "sd.evt.default.blob.abc.blob-committed.n.x"} {
		if _, _, _, _, _, err := events.ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) parsed a subject of the wrong length", bad)
		}
	}
}

func TestValidateNode(t *testing.T) {
	for node, ok := range map[string]bool{"vm": true, "build-07": true, "Node_1": true, "a.b": false, "": false, "-x": false, "a*": false, "a b": false, "a>": false} {
		if err := events.ValidateNode(node); (err == nil) != ok {
			t.Errorf("ValidateNode(%q) = %v, want ok=%v", node, err, ok)
		}
	}
}

func TestValidateNamespace(t *testing.T) {
	tests := []struct {
		name string
		ns   string
		ok   bool
	}{
		{"default", "default", true},
		{"dashes", "team-a_1", true},
		{"dot", "a.b", false},
		{"wildcard", "*", false},
		{"upper", "Prod", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := events.ValidateNamespace(tc.ns); (err == nil) != tc.ok {
				t.Errorf("ValidateNamespace(%q) = %v, want ok=%v", tc.ns, err, tc.ok)
			}
		})
	}
}

func TestPermanentKeepsClassAndMessage(t *testing.T) {
	err := events.Permanent(errors.Join(errors.New("manifest not found"), errdefs.ErrNotFound))
	if !events.IsPermanent(err) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("permanent error lost its class: %v", err)
	}
	if events.IsPermanent(errdefs.ErrUnavailable) {
		t.Fatal("plain error reported permanent")
	}
	if errdefs.Code(err) != "not_found" {
		t.Fatalf("code %q", errdefs.Code(err))
	}
}
