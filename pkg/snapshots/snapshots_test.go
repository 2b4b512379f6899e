package snapshots_test

import (
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stevedore/stevedore/pkg/snapshots"
)

func TestChainID(t *testing.T) {
	d := []digest.Digest{digest.FromString("a"), digest.FromString("b"), digest.FromString("c")}
	got := snapshots.ChainID(d)
	c1 := digest.FromString(string(d[0]) + " " + string(d[1]))
	c2 := digest.FromString(string(c1) + " " + string(d[2]))
	want := []digest.Digest{d[0], c1, c2}
	if len(got) != 3 {
		t.Fatalf("ChainID = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("chainID[%d] = %s, want %s", i, got[i], want[i])
		}
	}
	if snapshots.ChainID(nil) != nil {
		t.Error("ChainID(nil) != nil")
	}
}

func TestMountString(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    snapshots.Mount
		want string
	}{
		{"overlay", snapshots.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a:/b", "upperdir=/c d"}},
			`mount -t overlay -o 'lowerdir=/a:/b,upperdir=/c d' overlay <target>`},
		{"bind", snapshots.Mount{Type: "bind", Source: "/s/1/fs", Options: []string{"rbind", "ro"}},
			`mount -t bind -o rbind,ro /s/1/fs <target>`},
		{"no options", snapshots.Mount{Type: "tmpfs", Source: "it's"}, `mount -t tmpfs 'it'\''s' <target>`},
	} {
		if got := tc.m.String(); got != tc.want {
			t.Errorf("%s: String() = %s, want %s", tc.name, got, tc.want)
		}
	}
}
