package proxy

// From a differential review of static files against nginx: more cases
// side by side, and the fixes they led to (each test failed before).

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"realroot/internal/nginxtest"
	"realroot/internal/phpfpmtest"
)

// TestStaticParity is TestNginxParity (nginx_parity_test.go) for the cases of
// a differential review of static files and routing: the same nginx block
// (gzip_static on), php-fpm and comparison, over paritySite plus staticParitySite,
// an empty directory dirgz.css.gz and a link outgz.css.gz to a file outside
// the deploy. On-the-fly compression is off: nginx's block has none.
func TestStaticParity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nginx and php-fpm")
	}
	nginxtest.Require(t)

	site := maps.Clone(paritySite)
	maps.Copy(site, parityStaticSite)
	maps.Copy(site, staticParitySite)
	dir := newDeploy(t, site, "r1")
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.gz"), []byte("STATIC outside secret.gz\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	parityTouch(t, outside)
	links := map[string]string{
		"public/outgz.css.gz": filepath.Join(outside, "secret.gz"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, "releases", "r1", name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "releases", "r1", "public", "dirgz.css.gz"), 0o755); err != nil {
		t.Fatal(err)
	}
	parityTouch(t, dir)
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	docroot := filepath.Join(dir, "current", "public")

	rrAddr, root := startParityRealroot(t, docroot, fpm.Socket, Options{FrontController: "/index.php", DisableCompression: true})

	ngAddr, gzipStatic := startParityNginx(t, docroot, fpm.Socket)
	if !gzipStatic {
		t.Skip("nginx has no gzip_static")
	}

	runParity(t, staticParityCases, ngAddr, rrAddr, root, dir)
}

// staticParitySite adds to paritySite and parityStaticSite the files of
// staticParityCases.
var staticParitySite = map[string]string{
	"public/zero.txt":            "",
	"public/LICENSE":             "STATIC LICENSE\n",
	"public/both/index.php":      `<?php $file = __FILE__; include __DIR__ . '/../dump.inc';`,
	"public/both/index.html":     "STATIC both/index.html\n",
	"public/outgz.css":           "STATIC outgz.css\n",
	"public/dirgz.css":           "STATIC dirgz.css\n",
	"public/gzidx/index.html":    "STATIC gzidx/index.html\n",
	"public/gzidx/index.html.gz": "STATIC gzidx/index.html.gz\n",
	"public/big.bin":             strings.Repeat("0123456789abcdef", 70000/16),
	"public/edge.txt":            strings.Repeat("e", cacheFileMax),   // the largest file kept in memory
	"public/edge1.txt":           strings.Repeat("f", cacheFileMax+1), // the smallest read from disk
	"public/pct%2e.txt":          "STATIC pct%2e.txt\n",
	"public/file.":               "STATIC file.\n",
	"public/app.js":              "STATIC app.js\n",
	"public/x.json":              "STATIC x.json\n",
	"public/x.woff2":             "STATIC x.woff2\n",
	"public/x.webp":              "STATIC x.webp\n",
	"public/X.PNG":               "STATIC X.PNG\n",
	"public/x.svg":               "STATIC x.svg\n",
}

// staticNo412Validators: on a 412 nginx's error page drops ETag and
// Last-Modified; realroot (http.ServeContent) keeps them.
var staticNo412Validators = []string{
	`etag: nginx <unset>; realroot "\"65937d25-12\""`,
	`last-modified: nginx <unset>; realroot "Tue, 02 Jan 2024 03:04:05 GMT"`,
}

var staticParityCases = []parityCase{
	// Found different, and fixed. Ranges that name no byte: a suffix of
	// length 0, or any suffix of an empty file. http.ServeContent
	// answered 206 with an invalid Content-Range ("bytes 18-17/18", "bytes
	// 0--1/0") and an empty body or part; nginx drops such a range (416
	// with bytes */18 when none is left; the whole empty file, 200).
	{name: "range suffix zero", target: "/static.txt", header: []string{"Range: bytes=-0"}, full: true},
	{name: "range suffix zero and one", target: "/static.txt", header: []string{"Range: bytes=0-1,-0"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "empty file range suffix", target: "/zero.txt", header: []string{"Range: bytes=-5"}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	// The range unit is case-insensitive (RFC 9110 §14.1): realroot
	// answered "Bytes=0-3" 416.
	{name: "range unit case", target: "/static.txt", header: []string{"Range: Bytes=0-3"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range unit upper", target: "/static.txt", header: []string{"Range: BYTES=-3"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	// A sibling realroot may not serve (here a link out of the deploy;
	// or one it cannot read) is passed over, as gzip_static passes over
	// one it cannot open: realroot answered 404 (403 unreadable) to the
	// clients that accept gzip, 200 to the others. nginx serves the link.
	{name: "sibling outside the deploy", target: "/outgz.css", header: []string{"Accept-Encoding: gzip"}, full: true,
		diffs: []string{
			parityCharset("text/css"),
			`accept-ranges: nginx <unset>; realroot "bytes"`,
			`answer: nginx static outside secret.gz; realroot static outgz.css`,
			`body: nginx "STATIC outside secret.gz\n"; realroot "STATIC outgz.css\n"`,
			`content-encoding: nginx "gzip"; realroot <unset>`,
			`content-length: nginx "25"; realroot "17"`,
			`etag: nginx "\"65937d25-19\""; realroot "\"65937d25-11\""`,
		}},

	// The same as nginx already.
	{name: "sibling a directory", target: "/dirgz.css", header: []string{"Accept-Encoding: gzip"}, full: true,
		diffs: []string{parityCharset("text/css")}},
	{name: "index with a sibling", target: "/gzidx/", header: []string{"Accept-Encoding: gzip"}, full: true,
		diffs: []string{parityCharset("text/html"), `vary: nginx <unset>; realroot "Accept-Encoding"`}},
	{name: "sibling head", target: "/style.css", meth: "HEAD", header: []string{"Accept-Encoding: gzip"}, full: true,
		diffs: []string{parityCharset("text/css"), `vary: nginx <unset>; realroot "Accept-Encoding"`}},
	{name: "sibling if-none-match", target: "/style.css", header: []string{"Accept-Encoding: gzip", `If-None-Match: "65937d25-14"`}, full: true,
		diffs: []string{parityNo304LastModified, `vary: nginx <unset>; realroot "Accept-Encoding"`}},
	{name: "sibling q=0", target: "/style.css", header: []string{"Accept-Encoding: gzip;q=0"}, full: true,
		diffs: []string{parityCharset("text/css")}},
	{name: "empty file", target: "/zero.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "empty file head", target: "/zero.txt", meth: "HEAD", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "empty file range", target: "/zero.txt", header: []string{"Range: bytes=0-"}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "no extension", target: "/LICENSE", full: true},
	{name: "dir with index.php and index.html", target: "/both/"},
	{name: "over the cache size", target: "/big.bin", full: true},
	{name: "over the cache size head", target: "/big.bin", meth: "HEAD", full: true},
	{name: "over the cache size range", target: "/big.bin", header: []string{"Range: bytes=69000-"}, full: true,
		diffs: []string{parityRangeAcceptRanges}},
	{name: "cache size limit", target: "/edge.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "cache size limit + 1", target: "/edge1.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "cache size limit if-none-match", target: "/edge.txt", header: []string{`If-None-Match: "x", W/"65937d25-10000"`}, full: true,
		diffs: []string{parityNo304LastModified}},
	{name: "cache size limit + 1 if-none-match", target: "/edge1.txt", header: []string{`If-None-Match: "x", W/"65937d25-10001"`}, full: true,
		diffs: []string{parityNo304LastModified}},
	{name: "cache size limit + 1 range", target: "/edge1.txt", header: []string{"Range: bytes=-2"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "if-none-match list", target: "/static.txt", header: []string{`If-None-Match: "a", {{etag}}`}, full: true,
		diffs: []string{parityNo304LastModified}},
	{name: "if-none-match weak", target: "/static.txt", header: []string{`If-None-Match: W/{{etag}}`}, full: true,
		diffs: []string{parityNo304LastModified}},
	{name: "if-none-match other, if-modified-since equal", target: "/static.txt",
		header: []string{`If-None-Match: "x"`, "If-Modified-Since: {{lastmod}}"}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "head if-none-match", target: "/static.txt", meth: "HEAD", header: []string{`If-None-Match: {{etag}}`}, full: true,
		diffs: []string{parityNo304LastModified}},
	{name: "if-match", target: "/static.txt", header: []string{`If-Match: {{etag}}`}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "if-match star", target: "/static.txt", header: []string{`If-Match: *`}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "if-match other", target: "/static.txt", header: []string{`If-Match: "x"`}, full: true, diffs: staticNo412Validators},
	{name: "if-match weak", target: "/static.txt", header: []string{`If-Match: W/{{etag}}`}, full: true, diffs: staticNo412Validators},
	{name: "if-unmodified-since older", target: "/static.txt", header: []string{`If-Unmodified-Since: {{older}}`}, full: true,
		diffs: staticNo412Validators},
	{name: "if-unmodified-since newer", target: "/static.txt", header: []string{`If-Unmodified-Since: {{newer}}`}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "range overlapping", target: "/static.txt", header: []string{"Range: bytes=0-5,2-8"}, full: true, multipart: true},
	{name: "range overlapping over the size", target: "/static.txt", header: []string{"Range: bytes=0-15,2-17"}, full: true,
		diffs: []string{parityCharset("text/plain")}}, // the whole file, 200
	{name: "range suffix over the size", target: "/static.txt", header: []string{"Range: bytes=-100"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range one beyond the end", target: "/static.txt", header: []string{"Range: bytes=0-1,100-200"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range end beyond the end", target: "/static.txt", header: []string{"Range: bytes=10-100"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range at the end", target: "/static.txt", header: []string{"Range: bytes=18-"}, full: true},
	{name: "range head", target: "/static.txt", meth: "HEAD", header: []string{"Range: bytes=0-3"}, full: true,
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "if-range later date", target: "/static.txt", header: []string{"Range: bytes=0-3", "If-Range: {{newer}}"}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "if-range weak", target: "/static.txt", header: []string{"Range: bytes=0-3", "If-Range: W/{{etag}}"}, full: true,
		diffs: []string{parityCharset("text/plain")}},
	{name: "dir redirect encoded slash", target: "/both%2F"},
	{name: "encoded slash", target: "/both%2Findex.html", full: true, diffs: []string{parityCharset("text/html")}},
	{name: "double encoded", target: "/static%252etxt"},
	{name: "name with a percent", target: "/pct%252e.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "trailing dot", target: "/static.txt."},
	{name: "name ending in a dot", target: "/file.", full: true},
	{name: "dir trailing dot", target: "/both."},
	{name: "double slash static", target: "//static.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "encoded dot dot", target: "/both/%2e%2e/static.txt", full: true, diffs: []string{parityCharset("text/plain")}},
	{name: "encoded dot dot above root", target: "/%2e%2e/static.txt"},
	{name: "encoded nul", target: "/static.txt%00"},
	{name: "backslash", target: "/both\\index.html"},
	{name: "json", target: "/x.json", full: true},
	{name: "woff2", target: "/x.woff2", full: true},
	{name: "webp", target: "/x.webp", full: true},
	{name: "upper-case extension", target: "/X.PNG", full: true},
	{name: "svg", target: "/x.svg", full: true},
	// Left different: Go's type table.
	{name: "js", target: "/app.js", full: true,
		diffs: []string{`content-type: nginx "application/javascript"; realroot "text/javascript; charset=utf-8"`}},
	// Left different: RFC 9110 §13.2.2 evaluates If-None-Match and, only
	// without it, If-Modified-Since; If-Match and, only without it,
	// If-Unmodified-Since, which is ignored when it is not a date. nginx
	// checks each given.
	{name: "if-none-match equal, if-modified-since older", target: "/static.txt",
		header: []string{`If-None-Match: {{etag}}`, "If-Modified-Since: {{older}}"}, full: true,
		diffs: []string{
			`status: nginx 200; realroot 304`,
			`answer: nginx static static.txt; realroot other`,
			`accept-ranges: nginx "bytes"; realroot <unset>`,
			`body: nginx "STATIC static.txt\n"; realroot ""`,
			`content-length: nginx "18"; realroot <unset>`,
			`content-type: nginx "text/plain"; realroot ""`,
			`framing: nginx length; realroot none`,
			parityNo304LastModified,
		}},
	{name: "if-match equal, if-unmodified-since older", target: "/static.txt",
		header: []string{`If-Match: {{etag}}`, `If-Unmodified-Since: {{older}}`}, full: true,
		diffs: append([]string{`status: nginx 412; realroot 200`, `answer: nginx other; realroot static static.txt`,
			`accept-ranges: nginx <unset>; realroot "bytes"`}, staticNo412Validators...)},
	{name: "if-unmodified-since not a date", target: "/static.txt", header: []string{`If-Unmodified-Since: nope`}, full: true,
		diffs: append([]string{`status: nginx 412; realroot 200`, `answer: nginx other; realroot static static.txt`,
			`accept-ranges: nginx <unset>; realroot "bytes"`}, staticNo412Validators...)},
}

// TestEmptyRanges: a Range naming no byte of the file, "-0" or a
// suffix of an empty file, got 206 with an invalid Content-Range ("bytes
// 18-17/18", "bytes 0--1/0") from http.ServeContent. nginx drops such a
// range: 416 with bytes */SIZE when no other is left, the whole empty file
// (200). The unit is case-insensitive (RFC 9110 §14.1): "Bytes=0-3" was
// 416. From memory and from disk alike.
func TestEmptyRanges(t *testing.T) {
	small := "STATIC static.txt\n" // 18 bytes
	big := strings.Repeat("b", cacheFileMax+2)
	dir := newDeploy(t, map[string]string{"a.txt": small, "big.txt": big, "zero.txt": ""}, "A")
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	size := func(s string) string { return strconv.Itoa(len(s)) }
	tests := []struct {
		path, give string
		status     int
		cr, body   string
	}{
		{"/a.txt", "bytes=-0", 416, "bytes */18", ""},
		{"/a.txt", "bytes=-00, -0", 416, "bytes */18", ""},
		{"/a.txt", "bytes=0-1,-0", 206, "bytes 0-1/18", "ST"},
		{"/a.txt", "Bytes=0-3", 206, "bytes 0-3/18", "STAT"},
		{"/a.txt", "BYTES=-3", 206, "bytes 15-17/18", "xt\n"},
		{"/a.txt", "bytes=-3", 206, "bytes 15-17/18", "xt\n"},
		{"/big.txt", "bytes=-0", 416, "bytes */" + size(big), ""},
		{"/big.txt", "bytes=-0,0-0", 206, "bytes 0-0/" + size(big), "b"},
		{"/zero.txt", "bytes=-5", 200, "", ""},
		{"/zero.txt", "bytes=-0", 200, "", ""},
		{"/zero.txt", "bytes=0-", 200, "", ""},
	}
	for _, tt := range tests {
		for range 2 { // fills the cache, then from memory
			r := httptest.NewRequest("GET", "http://example.test"+tt.path, nil)
			r.Header.Set("Range", tt.give)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			cr := w.Header().Get("Content-Range")
			body := w.Body.String()
			if w.Code == 416 {
				body = "" // the error text
			}
			if w.Code != tt.status || cr != tt.cr || body != tt.body {
				t.Errorf("GET %s Range: %s = %d Content-Range %q body %.20q; want %d %q %q",
					tt.path, tt.give, w.Code, cr, body, tt.status, tt.cr, tt.body)
			}
		}
	}
}

// TestSiblingUnservable: a precompressed sibling realroot may not serve
// (a link out of the deploy, or a file it cannot read: a build step's
// umask 077) answered 404 or 403 to every client accepting gzip, while the
// others got the file. nginx's gzip_static passes over a sibling it cannot
// open and serves the file itself; so does realroot now (it never serves a
// link out of the deploy).
func TestSiblingUnservable(t *testing.T) {
	css := "STATIC a.css\n"
	dir := newDeploy(t, map[string]string{"a.css": css, "b.css": css, "b.css.gz": "GZ"}, "A")
	outside := filepath.Join(t.TempDir(), "secret.gz")
	if err := os.WriteFile(outside, []byte("GZ outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "releases/A/a.css.gz")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "releases/A/b.css.gz"), 0o600); err != nil {
		t.Fatal(err)
	}
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) { // let nobody walk down
		os.Chmod(d, 0o755)
	}
	h := New(newReleases(t, filepath.Join(dir, "current")), nil, Options{DisableCompression: true})
	get := func(p string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "http://example.test"+p, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	etags := map[string]string{}
	for _, p := range []string{"/a.css", "/b.css"} {
		fi, err := os.Stat(filepath.Join(dir, "releases/A", p))
		if err != nil {
			t.Fatal(err)
		}
		etags[p] = fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), len(css))
	}
	check := func(p string) {
		t.Helper()
		for range 2 {
			w := get(p, "Accept-Encoding", "gzip")
			if w.Code != 200 || w.Body.String() != css || w.Header().Get("Content-Encoding") != "" || w.Header().Get("Vary") != "" {
				t.Errorf("GET %s, Accept-Encoding: gzip = %d %q Content-Encoding %q Vary %q; want 200, the file itself",
					p, w.Code, w.Body.String(), w.Header().Get("Content-Encoding"), w.Header().Get("Vary"))
			}
			if et := w.Header().Get("Etag"); et != etags[p] {
				t.Errorf("GET %s: ETag %s; want the file's, %s", p, et, etags[p])
			}
		}
	}
	check("/a.css")
	asNobody(func() {
		if w := get("/b.css.gz"); w.Code != http.StatusForbidden {
			t.Errorf("GET /b.css.gz = %d; want 403 (the setup does not drop the permission)", w.Code)
			return
		}
		check("/b.css")
	})
}

// TestTypeWithoutSystemTable: where /etc/mime.types is missing (slim
// container images), a file's Content-Type comes from nginx's table, as
// nginx's own does, not application/octet-stream for robots.txt, favicons
// and fonts; the system's answer, when there is one, comes first.
func TestTypeWithoutSystemTable(t *testing.T) {
	none := func(string) string { return "" }
	for ext, want := range map[string]string{
		".txt":   "text/plain; charset=utf-8",
		".TXT":   "text/plain; charset=utf-8",
		".ico":   "image/x-icon",
		".woff2": "font/woff2",
		".mp4":   "video/mp4",
		".map":   "application/octet-stream", // not in nginx's table either
		"":       "application/octet-stream",
	} {
		if got := typeByExt(ext, none); got != want {
			t.Errorf("typeByExt(%q) without a system table = %q; want %q", ext, got, want)
		}
	}
	system := func(string) string { return "font/woff2; system" }
	if got := typeByExt(".woff2", system); got != "font/woff2; system" {
		t.Errorf("typeByExt(.woff2) = %q; want the system's answer first", got)
	}
}
