package runtime

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestTaskID(t *testing.T) {
	for _, tc := range []struct{ ns, id, want string }{
		{"default", "web", "web"},
		{"b", "web", "_1_b_web"},
		{"a_b", "c", "_3_a_b_c"},
		{"a", "b_c", "_1_a_b_c"},
		{"team-1", "x-y_z", "_6_team-1_x-y_z"},
	} {
		if got := TaskID(tc.ns, tc.id); got != tc.want {
			t.Errorf("TaskID(%q, %q) = %q, want %q", tc.ns, tc.id, got, tc.want)
		}
	}

	// Distinct (namespace, id) pairs get distinct task ids, each a runc id
	// and a subject token. The names are built from the characters that
	// could make two encodings meet.
	token := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$`)
	containerID := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`) // the gateway's rule
	var nss, ids []string
	for _, p := range []string{"a", "a_", "a_1", "1_a", "_1_a", "a-b", "a_b_c"} {
		if ns := strings.TrimLeft(strings.ToLower(p), "_-"); ns != "" {
			nss = append(nss, ns)
		}
		ids = append(ids, strings.TrimLeft(p, "_-"), "b"+p, p+"_default", "default_"+strings.TrimLeft(p, "_-"))
	}
	nss = append(nss, "default", strings.Repeat("n", 63))
	ids = append(ids, strings.Repeat("I", 128), "default", "1_a_a")
	seen := map[string]string{}
	for _, ns := range nss {
		for _, id := range ids {
			if !containerID.MatchString(id) {
				continue
			}
			got := TaskID(ns, id)
			if !token.MatchString(got) {
				t.Errorf("TaskID(%q, %q) = %q: not a runc id and subject token", ns, id, got)
			}
			pair := fmt.Sprintf("%s/%s", ns, id)
			if other, ok := seen[got]; ok && other != pair {
				t.Errorf("TaskID(%s) = TaskID(%s) = %q", pair, other, got)
			}
			seen[got] = pair
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d pairs checked", len(seen))
	}
}
