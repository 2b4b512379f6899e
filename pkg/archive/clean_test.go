package archive

import "testing"

func TestCleanName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"a/b", "a/b", true},
		{"./a/b/", "a/b", true},
		{"/a//b/.", "a/b", true},
		{"a/.", "a", true},
		{".", "", true},
		{"", "", true},
		{"/", "", true},
		{"a/../b", "b", true},
		{"a/b/../../c", "c", true},
		{"..a/b..", "..a/b..", true},
		{"...", "...", true},
		{"..", "", false},
		{"../a", "", false},
		{"a/../..", "", false},
		{"/../a", "", false},
		{"a/../../b", "", false},
	} {
		got, ok := cleanName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("cleanName(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
