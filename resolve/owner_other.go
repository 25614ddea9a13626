//go:build !unix

package resolve

import "io/fs"

// fileOwner is unknown without Unix permissions.
func fileOwner(fs.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
