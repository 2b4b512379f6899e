package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stevedore/stevedore/pkg/events"
)

// renameField returns an upcaster that renames a top-level payload field.
func renameField(from, to string) events.UpcastFunc {
	return func(p json.RawMessage) (json.RawMessage, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		if v, ok := m[from]; ok {
			m[to] = v
			delete(m, from)
		}
		return json.Marshal(m)
	}
}

func TestUpcastChain(t *testing.T) {
	u := events.NewUpcasters(3)
	u.Register("thing-made", 1, renameField("name", "title"))
	u.Register("thing-made", 2, renameField("title", "label"))
	u.Register("other", 2, func(json.RawMessage) (json.RawMessage, error) { return nil, errors.New("boom") })

	tests := []struct {
		name    string
		stored  string
		want    string // payload after upcasting
		wantErr error
		errHas  string
	}{
		{name: "v1 through both steps", stored: `{"type":"thing-made","v":1,"payload":{"name":"x"}}`, want: `{"label":"x"}`},
		{name: "v2 through the last step", stored: `{"type":"thing-made","v":2,"payload":{"title":"y"}}`, want: `{"label":"y"}`},
		{name: "current left alone", stored: `{"type":"thing-made","v":3,"payload":{"label":"z","name":"kept"}}`, want: `{"label":"z","name":"kept"}`},
		{name: "no v is version 0; types without upcasters pass through", stored: `{"type":"plain","payload":{"a":1}}`, want: `{"a":1}`},
		{name: "newer is refused, not crashed on", stored: `{"type":"thing-made","v":4,"payload":{"whatever":true}}`, wantErr: events.ErrNewerVersion},
		{name: "upcaster error", stored: `{"type":"other","v":1,"payload":{}}`, errHas: "boom"},
		{name: "not json", stored: `{`, errHas: "not an event envelope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := u.Unmarshal([]byte(tc.stored))
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if ev == nil || ev.Version != 4 {
					t.Fatalf("a newer event comes back as stored, so its reader can name it: %+v", ev)
				}
				return
			case tc.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one saying %q", err, tc.errHas)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if ev.Version != 3 {
				t.Errorf("version = %d, want 3", ev.Version)
			}
			if string(ev.Payload) != tc.want {
				t.Errorf("payload = %s, want %s", ev.Payload, tc.want)
			}
		})
	}
}

func TestUpcastersRegisterGuards(t *testing.T) {
	u := events.NewUpcasters(2)
	u.Register("t", 1, renameField("a", "b"))
	for name, fn := range map[string]func(){
		"twice":       func() { u.Register("t", 1, renameField("a", "b")) },
		"nil":         func() { u.Register("t", 0, nil) },
		"not older":   func() { u.Register("t", 2, renameField("a", "b")) },
		"negative v":  func() { u.Register("t", -1, renameField("a", "b")) },
		"beyond next": func() { u.Register("u", 5, renameField("a", "b")) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			fn()
		})
	}
}

// The package-level registry is the one the log adapter reads with: it
// upcasts to SchemaVersion.
func TestDefaultUnmarshal(t *testing.T) {
	ev, err := events.New(events.Meta{Namespace: "default"}, events.TypePullRequested, events.PullAggregate("op"), events.PullRequested{Ref: "r/a:1"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != events.SchemaVersion || got.ID != ev.ID || string(got.Payload) != string(ev.Payload) {
		t.Fatalf("round trip = %+v, want %+v", got, ev)
	}
	ev.Version = events.SchemaVersion + 1
	b, _ = json.Marshal(ev)
	if _, err := events.Unmarshal(b); !errors.Is(err, events.ErrNewerVersion) {
		t.Fatalf("newer event: err = %v", err)
	}
}
