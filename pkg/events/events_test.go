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
		ev, err := events.New(events.Meta{Namespace: "default"}, events.TypeImageUpdated, agg, events.ImageUpdated{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ns, kind, id, typ, err := events.ParseSubject(ev.Subject())
		if err != nil || ns != "default" || kind != events.KindImage || id != agg.ID || typ != events.TypeImageUpdated {
			t.Errorf("ParseSubject(%q) = %s %s %s %s %v", ev.Subject(), ns, kind, id, typ, err)
		}
	}
	if _, _, _, _, err := events.ParseSubject("sd.evt.default.blob"); err == nil {
		t.Error("short subject parsed")
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
