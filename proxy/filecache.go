package proxy

import (
	"io"
	"io/fs"
	"net/http"
	"os"
	"realroot/resolve"
	"strconv"
	"sync"
	"time"
)

// fileCache keeps small static files in memory, so that serving one costs
// the stat routing does anyway instead of open, fstat, the /proc check,
// seeks and close. An entry is used only while the path still names the very
// file it was read from (device, inode, size and mtime, from routing's stat),
// and it was read through Release.Open, so the rule on symlinks holds.
// Releases are immutable in practice; a changed file just misses.
type fileCache struct {
	mu      sync.RWMutex
	entries map[string]*cachedFile // by full path
	size    int64                  // bytes held
}

type cachedFile struct {
	fi   fs.FileInfo // of the file read
	data []byte
	// Header values, each of capacity 1 so that an append copies: set
	// straight into a response's header map, they cost no allocation.
	etagV, lastModified, length []string
}

const (
	cacheFileMax  = 64 << 10 // larger files are not cached
	cacheTotalMax = 32 << 20 // past this the cache starts over
)

// get returns the entry for path if it still matches fi.
func (c *fileCache) get(path string, fi fs.FileInfo) *cachedFile {
	c.mu.RLock()
	e := c.entries[path]
	c.mu.RUnlock()
	if e == nil || !resolve.SameVersion(e.fi, fi) {
		return nil
	}
	return e
}

// fill reads f (opened through Release.Open, its FileInfo fi) into a new
// entry for path. It returns nil when the file is too large or changes
// while read.
func (c *fileCache) fill(path string, f *os.File, fi fs.FileInfo) *cachedFile {
	if fi.Size() > cacheFileMax {
		return nil
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil
	}
	if n, _ := f.Read(make([]byte, 1)); n != 0 {
		return nil // it grew
	}
	e := &cachedFile{fi: fi, data: data}
	e.etagV = []string{etag(fi.ModTime().Unix(), fi.Size())}[:1:1]
	if mt := fi.ModTime(); !mt.IsZero() && !mt.Equal(time.Unix(0, 0)) { // as http.ServeContent
		e.lastModified = []string{mt.UTC().Format(http.TimeFormat)}[:1:1]
	}
	e.length = []string{strconv.FormatInt(fi.Size(), 10)}[:1:1]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || c.size+fi.Size() > cacheTotalMax {
		c.entries, c.size = make(map[string]*cachedFile), 0
	}
	if old := c.entries[path]; old != nil {
		c.size -= old.fi.Size()
	}
	c.entries[path] = e
	c.size += fi.Size()
	return e
}
