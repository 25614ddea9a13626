package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// X-Accel-Redirect and X-Sendfile: PHP authorises a download and names the
// file; realroot lets php-fpm go and serves the file itself, so that no
// worker is held for the transfer.
//
//   - X-Accel-Redirect: /protected/a.pdf is a URL path (%-decoded, query
//     dropped). Under one of InternalLocations' prefixes it names a file of
//     that location's directory; else a file of the pinned release, like an
//     nginx `internal` location: Deny does not apply (that is the point:
//     PHP serves what clients cannot fetch), dot-paths and PHP scripts
//     (their source) are refused.
//   - X-Sendfile: /abs/path is a file name, taken as it is, served only
//     below one of SendfileDirs; without SendfileDirs the header is ignored.
//
// A path with a NUL byte or a "." or ".." element is refused, never cleaned
// into something else. Directories are opened with os.OpenInRoot: symlinks
// inside them are followed only while they stay inside (and must be
// relative), so nothing escapes, whatever races the file system. Refusals
// and missing files are 404s. Neither header reaches the client (see
// hiddenHeaders). PHP's other headers are kept (Content-Disposition,
// Cache-Control, Set-Cookie, Content-Encoding, ...); its Content-Type too,
// unless it is text/html, PHP's default_mimetype, which a script that sets
// none sends: then the file's type by extension, so that an upload is not
// served as HTML. ETag, Last-Modified, Content-Length, status, ranges and
// conditional requests are the file's, as for static files.

// maxInternalDiscard bounds what is read of php-fpm's body after an
// X-Accel-Redirect so that its connection can be kept; past it the
// connection is closed instead.
const maxInternalDiscard = 64 << 10

// location is one of InternalLocations.
type location struct{ prefix, dir string }

// locations sorts InternalLocations longest prefix first.
func locations(m map[string]string) []location {
	ls := make([]location, 0, len(m))
	for prefix, dir := range m {
		ls = append(ls, location{prefix: prefix, dir: filepath.Clean(dir)})
	}
	slices.SortFunc(ls, func(a, b location) int {
		if c := cmp.Compare(len(b.prefix), len(a.prefix)); c != 0 {
			return c
		}
		return strings.Compare(a.prefix, b.prefix)
	})
	return ls
}

// internalTarget returns the file PHP names in its response headers, and
// whether with X-Accel-Redirect (else X-Sendfile). ok is false when the
// response is served as PHP sent it.
func (h *Handler) internalTarget(hd http.Header) (target string, accel, ok bool) {
	if v := firstValue(hd["X-Accel-Redirect"]); v != "" { // canonical keys
		return v, true, true
	}
	if v := firstValue(hd["X-Sendfile"]); v != "" && len(h.opts.SendfileDirs) > 0 {
		return v, false, true
	}
	return "", false, false
}

// serveInternal ends the exchange with php-fpm, then serves the file PHP
// named with the headers already copied to w.
func (h *Handler) serveInternal(w *recorder, r *http.Request, x *exchange, resp *fcgi.Response, start time.Time, target string, accel bool) error {
	// A download script sends no body: read what there is, bounded, so
	// that the connection goes back to the pool now, not after the client.
	if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxInternalDiscard)); err != nil {
		return upstreamError(err, r.Context().Err() != nil)
	}
	resp.Body.Close()
	x.upstream = time.Since(start)

	var (
		f    *os.File
		name string
		err  error
	)
	if accel {
		f, name, err = h.openAccel(x, target)
	} else {
		f, name, err = h.openSendfile(target)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return &httpError{status: http.StatusForbidden, msg: "cannot stat internal file", err: err}
	}
	if !fi.Mode().IsRegular() {
		return errNotFound("internal file is not a regular file")
	}

	hd := w.Header()
	for _, k := range []string{"Content-Length", "Content-Range", "Etag", "Last-Modified", "Accept-Ranges", "Transfer-Encoding"} {
		delete(hd, k)
	}
	if mt, _, _ := strings.Cut(hd.Get("Content-Type"), ";"); mt == "" || equalFoldASCII(strings.TrimSpace(mt), "text/html") {
		hd.Set("Content-Type", contentType(name))
	}
	hd.Set("ETag", etag(fi.ModTime().Unix(), fi.Size()))
	ignoreOtherRanges(r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Served as a GET, as nginx's internal redirect does: a POST's
		// matching If-None-Match is a 304, not a 412.
		get := *r
		get.Method = http.MethodGet
		r = &get
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
	return nil
}

// openAccel opens the file of an X-Accel-Redirect URL path.
func (h *Handler) openAccel(x *exchange, target string) (*os.File, string, error) {
	p, err := accelPath(target)
	if err != nil {
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Accel-Redirect refused", err: err}
	}
	if hiddenPath(p) {
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Accel-Redirect refused: dot-path",
			err: fmt.Errorf("%w: %q", resolve.ErrBadPath, p)}
	}
	for _, l := range h.internal {
		if underPrefix(p, l.prefix) {
			f, err := openBelow(l.dir, strings.TrimPrefix(p[len(l.prefix):], "/"))
			return f, p, err
		}
	}
	if hasScriptExt(p, h.opts.PHPExtensions) {
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Accel-Redirect refused: a script's source",
			err: fmt.Errorf("%w: %q", resolve.ErrBadPath, p)}
	}
	f, _, err := x.rel.Open(p)
	switch {
	case errors.Is(err, resolve.ErrOutside):
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Accel-Redirect file resolves outside the deploy", err: err}
	case err != nil && notExist(err):
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Accel-Redirect: no such file", err: err}
	case err != nil:
		return nil, "", &httpError{status: http.StatusForbidden, msg: "X-Accel-Redirect: cannot open file", err: err}
	}
	return f, p, nil
}

// openSendfile opens the file of an X-Sendfile path, below one of
// SendfileDirs.
func (h *Handler) openSendfile(target string) (*os.File, string, error) {
	if !filepath.IsAbs(target) || strings.IndexByte(target, 0) >= 0 || hasDotElement(target) {
		return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Sendfile refused",
			err: fmt.Errorf("%w: %q is not a clean absolute path", resolve.ErrBadPath, target)}
	}
	p := filepath.Clean(target)
	for _, d := range h.opts.SendfileDirs {
		d = filepath.Clean(d)
		if rel, ok := strings.CutPrefix(p, d); ok && (d == "/" || strings.HasPrefix(rel, "/")) {
			f, err := openBelow(d, strings.TrimPrefix(rel, "/"))
			return f, p, err
		}
	}
	return nil, "", &httpError{status: http.StatusNotFound, msg: "X-Sendfile refused: outside sendfile dirs",
		err: fmt.Errorf("%w: %q", resolve.ErrOutside, target)}
}

// openBelow opens the file rel inside dir, never outside it. It opens with
// O_NONBLOCK, as nginx does, so that a FIFO is not waited on (it is then
// refused: not a regular file); a regular file reads as usual.
func openBelow(dir, rel string) (*os.File, error) {
	if rel == "" {
		return nil, errNotFound("internal path names a directory")
	}
	var f *os.File
	root, err := os.OpenRoot(dir)
	if err == nil {
		f, err = root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		root.Close()
	}
	switch {
	case err == nil:
		return f, nil
	case notExist(err):
		return nil, &httpError{status: http.StatusNotFound, msg: "internal file: no such file", err: err}
	case errors.Is(err, fs.ErrPermission):
		return nil, &httpError{status: http.StatusForbidden, msg: "internal file: cannot open", err: err}
	}
	return nil, &httpError{status: http.StatusNotFound, msg: "internal file refused", err: err}
}

// accelPath decodes and checks an X-Accel-Redirect value: an absolute URL
// path, with no NUL byte and no "." or ".." element; a query is dropped.
func accelPath(v string) (string, error) {
	p, _, _ := strings.Cut(v, "?")
	if strings.IndexByte(p, '%') >= 0 {
		var err error
		if p, err = url.PathUnescape(p); err != nil {
			return "", fmt.Errorf("%w: %q: %w", resolve.ErrBadPath, v, err)
		}
	}
	if !strings.HasPrefix(p, "/") || strings.IndexByte(p, 0) >= 0 || hasDotElement(p) {
		return "", fmt.Errorf("%w: %q is not a clean absolute URL path", resolve.ErrBadPath, v)
	}
	return path.Clean(p), nil
}

// hasDotElement reports whether the slash-separated p has a "." or ".."
// element.
func hasDotElement(p string) bool {
	for p != "" {
		var e string
		e, p, _ = strings.Cut(p, "/")
		if e == "." || e == ".." {
			return true
		}
	}
	return false
}
