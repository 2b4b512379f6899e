package local

import (
	"os"
)

// linkNoReplace makes src visible as dst with link(2), which fails with an
// error wrapping fs.ErrExist if dst exists, then removes src. A crash between
// the two leaves src in an ingest that is removed later.
func linkNoReplace(src, dst string) error {
	if err := os.Link(src, dst); err != nil {
		return err
	}
	return os.Remove(src)
}
