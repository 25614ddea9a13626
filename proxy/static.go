package proxy

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"

	"realroot/resolve"
)

// precompressed are the sibling encodings looked for, best first, like
// nginx's gzip_static (and brotli_static).
var precompressed = []struct{ encoding, ext string }{
	{"br", ".br"},
	{"gzip", ".gz"},
}

// compressible lists the extensions whose precompressed siblings are looked
// for; other files (images, archives) are served as they are.
var compressible = map[string]bool{
	".html": true, ".htm": true, ".css": true, ".js": true, ".mjs": true,
	".json": true, ".map": true, ".svg": true, ".xml": true, ".txt": true,
	".csv": true, ".md": true, ".wasm": true, ".ico": true, ".ttf": true,
	".otf": true, ".eot": true,
}

// serveStatic serves x.route's file from the pinned release: Content-Type by
// extension, ETag and Last-Modified like nginx, conditional requests, ranges
// (of the uncompressed file), HEAD, and a precompressed sibling when the
// client accepts it (the recorder may compress others on the fly).
func (h *Handler) serveStatic(w *recorder, r *http.Request, x *exchange) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return &httpError{status: http.StatusMethodNotAllowed, msg: "method not allowed for a static file",
			header: http.Header{"Allow": {"GET, HEAD"}}}
	}
	name := x.route.name
	ext := path.Ext(name)
	hd := w.Header()
	hd["Content-Type"] = contentTypeOf(name)

	served, sfi, encoding := name, x.route.info, ""
	ignoreOtherRanges(r)
	if sfi != nil {
		emptyRanges(r, sfi.Size())
	}
	// A range is of the file itself, never of a compressed sibling.
	if compressible[strings.ToLower(ext)] && r.Header.Get("Range") == "" {
		ae := r.Header.Get("Accept-Encoding")
		for _, pc := range precompressed {
			if !acceptsEncoding(ae, pc.encoding) {
				continue
			}
			if fi, err := x.rel.Stat(name + pc.ext); err == nil && fi.Mode().IsRegular() {
				served, sfi, encoding = name+pc.ext, fi, pc.encoding
				break
			}
		}
	}
	for _, c := range h.opts.CacheControl {
		if c.matches(name) {
			hd.Set("Cache-Control", c.Value)
			break
		}
	}

	var full string
	var f *os.File
	var fi fs.FileInfo
	var err error
	for {
		full = x.rel.Path(served)
		if sfi != nil && sfi.Size() <= cacheFileMax {
			if e := h.files.get(full, sfi); e != nil {
				setEncoding(hd, encoding)
				serveCached(w, r, e, h.date.get(x.start), served == name)
				return nil
			}
		}
		f, fi, err = x.rel.Open(served)
		if served == name || err == nil && fi.Mode().IsRegular() {
			break
		}
		// A sibling that cannot be served (a link out of the deploy,
		// unreadable, gone) is passed over, as nginx's gzip_static
		// passes over one it cannot open: the file itself is served.
		if err == nil {
			f.Close()
		}
		served, sfi, encoding = name, x.route.info, ""
	}
	setEncoding(hd, encoding)
	switch {
	case errors.Is(err, resolve.ErrOutside):
		return &httpError{status: http.StatusNotFound, msg: "file resolves outside the deploy", err: err}
	case err != nil && notExist(err):
		return &httpError{status: http.StatusNotFound, msg: "no such file", err: err}
	case err != nil:
		return &httpError{status: http.StatusForbidden, msg: "cannot open file", err: err}
	}
	defer f.Close()
	if !fi.Mode().IsRegular() {
		return errNotFound("not a regular file")
	}
	if e := h.files.fill(full, f, fi); e != nil {
		serveCached(w, r, e, h.date.get(x.start), served == name)
		return nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return &httpError{status: http.StatusInternalServerError, msg: "cannot read file", err: err}
	}
	hd.Set("ETag", etag(fi.ModTime().Unix(), fi.Size()))
	if served != name {
		// http.ServeContent sets no length once Content-Encoding is set;
		// the sibling is served whole (never a range), its size known.
		hd.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		http.ServeContent(siblingWriter{w}, r, "", fi.ModTime(), f)
		return nil
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

// setEncoding sets the headers of a precompressed sibling of encoding; ""
// (the file itself) sets none.
func setEncoding(hd http.Header, encoding string) {
	if encoding != "" {
		hd.Set("Content-Encoding", encoding)
		hd.Add("Vary", "Accept-Encoding")
	}
}

// emptyRanges rewrites a Range (bytes, ignoreOtherRanges has made sure) that
// http.ServeContent would get wrong for a file of size bytes: it answers a
// range of no byte, a suffix "-0" or any suffix of an empty file, 206 with
// an invalid Content-Range ("bytes 18-17/18", "bytes 0--1/0"), and a unit
// not spelt "bytes" 416, while units are case-insensitive (RFC 9110 §14.1).
// Such suffixes are dropped (RFC 9110 §14.1.1: they are not satisfiable);
// a set of nothing else becomes "bytes=SIZE-", which ServeContent answers
// 416 with Content-Range: bytes */SIZE, or on an empty file 200, as nginx
// answers both. The usual Range is left as it is, with no allocation.
func emptyRanges(r *http.Request, size int64) {
	rg, ok := r.Header["Range"]
	if !ok {
		return
	}
	v := strings.TrimSpace(rg[0])
	if len(v) < len("bytes=") {
		return
	}
	set := v[len("bytes="):]
	rewrite := !strings.HasPrefix(v, "bytes=")
	for s := set; s != "" && !rewrite; {
		var item string
		item, s, _ = strings.Cut(s, ",")
		rewrite = emptySuffix(item, size)
	}
	if !rewrite {
		return
	}
	b := []byte("bytes=")
	for s := set; s != ""; {
		var item string
		item, s, _ = strings.Cut(s, ",")
		if !emptySuffix(item, size) {
			if len(b) > len("bytes=") {
				b = append(b, ',')
			}
			b = append(b, strings.TrimSpace(item)...)
		}
	}
	if len(b) == len("bytes=") {
		b = strconv.AppendInt(b, size, 10)
		b = append(b, '-')
	}
	r.Header["Range"] = []string{string(b)}
}

// emptySuffix reports whether the range-spec item is a suffix range of no
// byte of a file of size bytes: "-0", or any suffix when size is 0.
func emptySuffix(item string, size int64) bool {
	start, end, ok := strings.Cut(item, "-")
	start, end = strings.TrimSpace(start), strings.TrimSpace(end)
	if !ok || start != "" || end == "" {
		return false
	}
	zero := true
	for i := 0; i < len(end); i++ {
		if end[i] < '0' || end[i] > '9' {
			return false
		}
		zero = zero && end[i] == '0'
	}
	return zero || size == 0
}

// siblingWriter serves a precompressed sibling through http.ServeContent. It
// drops the Accept-Ranges ServeContent sets: the sibling is served whole,
// and a range request gets a range of the file itself, so ranges of the
// sibling must not be offered. And it keeps the sibling's Content-Length
// (which ServeContent leaves unset once Content-Encoding is set) for a 200
// only: a 304 or 412 has no body.
type siblingWriter struct{ *recorder }

func (w siblingWriter) WriteHeader(status int) {
	hd := w.Header()
	hd.Del("Accept-Ranges")
	if status != http.StatusOK {
		hd.Del("Content-Length")
	}
	w.recorder.WriteHeader(status)
}

// conditionalHeaders are the request headers that make a static answer
// other than the whole file: http.ServeContent handles those.
var conditionalHeaders = []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"}

var acceptRanges = []string{"bytes"}[:1:1]

// serveCached serves a file from memory. The usual request, which asks for
// the whole file unconditionally, gets the headers http.ServeContent would
// set and the body in one write with them; any other goes through
// ServeContent (ranges, 304, 412). ranges is false for a precompressed
// sibling: no Accept-Ranges.
func serveCached(w *recorder, r *http.Request, e *cachedFile, date []string, ranges bool) {
	hd := w.Header()
	hd["Etag"] = e.etagV
	for _, k := range conditionalHeaders {
		if _, ok := r.Header[k]; ok {
			if !ranges {
				hd["Content-Length"] = e.length // for a 200 only (siblingWriter)
				http.ServeContent(siblingWriter{w}, r, "", e.fi.ModTime(), bytes.NewReader(e.data))
				return
			}
			// ServeContent sets the length of a 200 or 206 itself; a 412
			// would keep one set here, with no body.
			http.ServeContent(w, r, "", e.fi.ModTime(), bytes.NewReader(e.data))
			return
		}
	}
	hd["Content-Length"] = e.length
	hd["Date"] = date
	if e.lastModified != nil {
		hd["Last-Modified"] = e.lastModified
	}
	if ranges {
		hd["Accept-Ranges"] = acceptRanges
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(e.data)
	}
}

// contentTypes caches contentType's answer by extension, as a header
// value of capacity 1. The extensions are those of files that exist.
var contentTypes sync.Map // string -> []string

// contentTypeOf is contentType(name) as a header value.
func contentTypeOf(name string) []string {
	ext := path.Ext(name)
	if v, ok := contentTypes.Load(ext); ok {
		return v.([]string)
	}
	v := []string{contentType(name)}[:1:1]
	contentTypes.Store(ext, v)
	return v
}

// contentType is the Content-Type of a file by its extension (typeByExt).
func contentType(name string) string {
	return typeByExt(path.Ext(name), mime.TypeByExtension)
}

// etag is nginx's ETag: "mtime-size" in hex.
func etag(mtime, size int64) string {
	b := make([]byte, 0, 32)
	b = append(b, '"')
	b = strconv.AppendInt(b, mtime, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, size, 16)
	b = append(b, '"')
	return string(b)
}

// ignoreOtherRanges drops a Range header whose unit is not bytes, which
// RFC 9110 section 14.2 says to ignore (nginx does): http.ServeContent
// would answer 416.
func ignoreOtherRanges(r *http.Request) {
	if rg, ok := r.Header["Range"]; ok && (len(rg) != 1 || !hasPrefixFold(strings.TrimSpace(rg[0]), "bytes=")) {
		delete(r.Header, "Range")
	}
}

// acceptsEncoding reports whether the Accept-Encoding header ae accepts enc
// with a non-zero q.
func acceptsEncoding(ae, enc string) bool {
	for ae != "" {
		var item string
		item, ae, _ = strings.Cut(ae, ",")
		token, params, _ := strings.Cut(item, ";")
		if !strings.EqualFold(strings.TrimSpace(token), enc) {
			continue
		}
		return qvalue(params) > 0 // negotiate's parser: Q=0, q after another parameter
	}
	return false
}
