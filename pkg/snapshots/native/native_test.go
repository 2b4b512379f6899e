//go:build linux

package native_test

import (
	"testing"

	"github.com/stevedore/stevedore/pkg/snapshots"
	"github.com/stevedore/stevedore/pkg/snapshots/native"
	"github.com/stevedore/stevedore/pkg/snapshots/testsuite"
)

func TestSuite(t *testing.T) {
	testsuite.Run(t, "native", func(t *testing.T, root string) snapshots.Snapshotter {
		sn, err := native.New(root)
		if err != nil {
			t.Fatalf("native.New: %v", err)
		}
		return sn
	})
}
