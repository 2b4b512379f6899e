//go:build unix && !linux

package local

// renameNoReplace makes src visible as dst unless dst exists, in which case
// the error wraps fs.ErrExist.
func renameNoReplace(src, dst string) error { return linkNoReplace(src, dst) }
