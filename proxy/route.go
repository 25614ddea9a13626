package proxy

import (
	"errors"
	"io/fs"
	"net/http"
	"strings"
)

// kind says how a request is served. Its String is the route label of the
// access log and of metrics.
type kind uint8

const (
	kindStatic   kind = iota + 1 // a file served from the release
	kindPHP                      // a script named in the URL, maybe with PATH_INFO
	kindIndex                    // a directory's index script
	kindFront                    // the front controller, for a path naming nothing
	kindRedirect                 // a directory named without its trailing slash
)

func (k kind) String() string {
	switch k {
	case kindStatic:
		return "static"
	case kindPHP:
		return "php"
	case kindIndex:
		return "index"
	case kindFront:
		return "front"
	case kindRedirect:
		return "redirect"
	}
	return "none"
}

// route is where a request goes inside its pinned release.
type route struct {
	kind kind
	// name is the cleaned URL path of the file served: the static file, or
	// the script (SCRIPT_NAME).
	name string
	// pathInfo is what follows the script name in the URL (PATH_INFO).
	pathInfo string
	// docURI is nginx's $document_uri: the URL path after index and
	// try_files rewrites (a script's name without its PATH_INFO, as
	// `try_files $fastcgi_script_name =404` leaves it).
	docURI string
	// info is the static file's stat (kindStatic only).
	info fs.FileInfo
}

// fileSystem is what routing needs of a release: Stat of a cleaned URL path.
type fileSystem interface {
	Stat(name string) (fs.FileInfo, error)
}

// route maps the cleaned URL path p to a route in rel, the way nginx does
// with `index index.php index.html; try_files $uri $uri/ /index.php?$args;`
// and a `location ~ [^/]\.php(/|$)` that checks the script exists. It
// returns an *httpError for 403 and 404.
func (h *Handler) route(rel fileSystem, p string) (route, error) {
	if hiddenPath(p) {
		return route{}, errNotFound("hidden path")
	}
	if h.denied(p) {
		return route{}, &httpError{status: http.StatusForbidden, msg: "denied by rule"}
	}
	if script, pathInfo, ok := splitScript(p, h.opts.PHPExtensions); ok {
		if !isFile(rel, script) {
			return route{}, errNotFound("no such script")
		}
		return route{kind: kindPHP, name: script, pathInfo: pathInfo, docURI: script}, nil
	}

	fi, err := rel.Stat(p)
	switch {
	case err == nil && fi.Mode().IsRegular() && !strings.HasSuffix(p, "/"):
		return route{kind: kindStatic, name: p, docURI: p, info: fi}, nil
	case err == nil && fi.IsDir():
		if !strings.HasSuffix(p, "/") {
			return route{kind: kindRedirect, name: p + "/"}, nil
		}
		return h.index(rel, p)
	case err != nil && !notExist(err):
		return route{}, &httpError{status: http.StatusForbidden, msg: "cannot stat", err: err}
	}
	return h.front(rel)
}

// index serves a directory: its first index file, or 403 like nginx's index
// module when it has none.
func (h *Handler) index(rel fileSystem, dir string) (route, error) {
	for _, idx := range h.opts.Index {
		name := dir + idx
		fi, err := rel.Stat(name)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if h.denied(name) {
			// nginx's index redirects internally: its deny applies.
			return route{}, &httpError{status: http.StatusForbidden, msg: "denied by rule"}
		}
		if hasScriptExt(name, h.opts.PHPExtensions) {
			return route{kind: kindIndex, name: name, docURI: name}, nil
		}
		return route{kind: kindStatic, name: name, docURI: name, info: fi}, nil
	}
	return route{}, &httpError{status: http.StatusForbidden, msg: "directory index is forbidden"}
}

// front routes to the front controller, or 404 when there is none.
func (h *Handler) front(rel fileSystem) (route, error) {
	fc := h.opts.FrontController
	if fc == "" {
		return route{}, errNotFound("no such file")
	}
	if h.denied(fc) {
		return route{}, &httpError{status: http.StatusForbidden, msg: "denied by rule"}
	}
	if !isFile(rel, fc) {
		return route{}, errNotFound("no front controller")
	}
	return route{kind: kindFront, name: fc, docURI: fc}, nil
}

// denied reports whether p is, or is below, one of the deny prefixes.
func (h *Handler) denied(p string) bool {
	for _, d := range h.opts.Deny {
		if underPrefix(p, d) {
			return true
		}
	}
	return false
}

// underPrefix reports whether the path p is prefix or below it: /data
// covers /data and /data/x, not /database.
func underPrefix(p, prefix string) bool {
	return strings.HasPrefix(p, prefix) &&
		(len(p) == len(prefix) || p[len(prefix)] == '/' || prefix[len(prefix)-1] == '/')
}

// hiddenPath reports whether an element of p starts with ".", except below
// /.well-known/ (RFC 8615).
func hiddenPath(p string) bool {
	if strings.HasPrefix(p, "/.well-known/") {
		p = p[len("/.well-known"):]
	}
	return strings.Contains(p, "/.")
}

func isFile(rel fileSystem, name string) bool {
	fi, err := rel.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// notExist reports whether err means the name is not there; ENOTDIR (a file
// used as a directory), a name too long and a symlink loop count.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || isNotDir(err) || isNoName(err)
}
