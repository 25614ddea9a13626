package proxy

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// This file extends TestNginxParity (nginx_parity_test.go) to what a user
// of nginx notices at the HTTP level: static files (validators, 304s,
// ranges, HEAD, a precompressed sibling), request limits, and how PHP's
// own response headers come through. Its cases run in the same test, over
// the same nginx, php-fpm and deploy, and are also compared by
// parityCompareHTTP: interim (1xx) responses, every response header but
// those listed in parityIgnoredHeaders, the framing (Content-Length or
// chunked) and the body.

// parityStaticSite adds to paritySite the files these cases need. The .gz
// sibling is a stand-in (not gzip data): which file answered is what
// counts, and no client here decodes it.
var parityStaticSite = map[string]string{
	"public/style.css.gz":  "STATIC style.css.gz\n",
	"public/status404.php": `<?php http_response_code(404); echo "PHPOUT status404\n";`,
	"public/location.php":  `<?php header('Location: /x'); echo "PHPOUT location\n";`,
	"public/cookies.php":   `<?php setcookie('a', '1'); setcookie('b', '2'); echo "PHPOUT cookies\n";`,
	"public/empty.php":     `<?php`,
	"public/json.php":      `<?php header('Content-Type: application/json'); echo "{\"PHPOUT\":\"json\"}\n";`,
	"public/length.php":    `<?php header('Content-Length: 14'); echo "PHPOUT length\n";`,
}

// parityMtime is the mtime of every file of the deploy (parityTouch), so
// that ETags ("mtime-size" in hex, nginx's format, also realroot's) and
// Last-Modified are the same on every run, in requests and in diffs.
var parityMtime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// parityVars fill the conditional request headers: static.txt's (18 bytes)
// ETag and Last-Modified, and dates an hour either side.
var parityVars = strings.NewReplacer(
	"{{etag}}", fmt.Sprintf(`"%x-%x"`, parityMtime.Unix(), 18),
	"{{lastmod}}", parityMtime.Format(http.TimeFormat),
	"{{older}}", parityMtime.Add(-time.Hour).Format(http.TimeFormat),
	"{{newer}}", parityMtime.Add(time.Hour).Format(http.TimeFormat),
)

// parityTouch sets the mtime of every file below dir to parityMtime.
func parityTouch(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		return os.Chtimes(p, parityMtime, parityMtime)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// parityIgnoredHeaders legitimately differ between any two servers, or
// are compared elsewhere: Server, Date; Connection and Keep-Alive (the
// connection, not the resource: every request here sends Connection:
// close); X-Request-Id (realroot makes one); X-Dump (this test's own
// carrier of PHP's dump in a HEAD); Content-Type and Location (compared by
// parityCompare, or below for an answer it calls "other").
var parityIgnoredHeaders = map[string]bool{
	"Server": true, "Date": true, "Connection": true, "Keep-Alive": true,
	"X-Request-Id": true, "X-Dump": true, "Content-Type": true, "Location": true,
}

// parityPageHeaders describe a front's own error page, not the resource,
// and are not compared on one: its text differs (nginx's HTML, realroot's
// plain text with nosniff), and so do its type, length and framing.
var parityPageHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "X-Content-Type-Options": true,
}

// parityBigBody is over nginx's default client_max_body_size (1m), and
// realroot's default max-body-size (1m, docs/configuration.md; the
// handler's default when Options.MaxBodySize is 0, as in this test).
var parityBigBody = strings.Repeat("x", 2<<20)

// parityNo304LastModified: nginx repeats Last-Modified in a 304; realroot
// (Go's http.ServeContent) leaves it out when it sends an ETag, as RFC
// 9110 §15.4.5 allows (a cache updates the stored one; the ETag validates).
var parityNo304LastModified = `last-modified: nginx "Tue, 02 Jan 2024 03:04:05 GMT"; realroot <unset>`

// parityRangeAcceptRanges: nginx sends Accept-Ranges on a 200 only (the
// range filter clears it on a 206; gzip_static never sets it); realroot
// (ServeContent) on every static answer but a 304 and a precompressed
// sibling's.
var parityRangeAcceptRanges = `accept-ranges: nginx <unset>; realroot "bytes"`

var parityHTTPCases = []parityCase{
	// Static files: validators, conditional requests, ranges, HEAD. Both
	// send the same ETag ("mtime-size"), Last-Modified and Content-Length.
	{name: "static get", target: "/static.txt", diffs: []string{parityCharset("text/plain")}},
	{name: "static head validators", target: "/static.txt", meth: "HEAD", diffs: []string{parityCharset("text/plain")}},
	{name: "if-none-match etag", target: "/static.txt", header: []string{"If-None-Match: {{etag}}"},
		diffs: []string{parityNo304LastModified}},
	{name: "if-none-match wrong", target: "/static.txt", header: []string{`If-None-Match: "0-0"`},
		diffs: []string{parityCharset("text/plain")}},
	{name: "if-none-match star", target: "/static.txt", header: []string{"If-None-Match: *"},
		diffs: []string{parityNo304LastModified}},
	{name: "if-modified-since equal", target: "/static.txt", header: []string{"If-Modified-Since: {{lastmod}}"},
		diffs: []string{parityNo304LastModified}},
	{name: "if-modified-since older", target: "/static.txt", header: []string{"If-Modified-Since: {{older}}"},
		diffs: []string{parityCharset("text/plain")}},
	// A date after Last-Modified: nginx's default `if_modified_since
	// exact` sends the file (200), since the date is not Last-Modified;
	// realroot (ServeContent) answers 304, not modified since then (RFC
	// 9110 §13.1.3: the "before" comparison).
	{name: "if-modified-since newer", target: "/static.txt", header: []string{"If-Modified-Since: {{newer}}"},
		diffs: []string{
			`status: nginx 200; realroot 304`,
			`answer: nginx static static.txt; realroot other`,
			`accept-ranges: nginx "bytes"; realroot <unset>`,
			`content-length: nginx "18"; realroot <unset>`,
			`content-type: nginx "text/plain"; realroot ""`,
			`framing: nginx length; realroot none`,
			`body: nginx "STATIC static.txt\n"; realroot ""`,
			parityNo304LastModified,
		}},
	{name: "range first", target: "/static.txt", header: []string{"Range: bytes=0-3"},
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range suffix", target: "/static.txt", header: []string{"Range: bytes=-3"},
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range open", target: "/static.txt", header: []string{"Range: bytes=5-"},
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "range multi", target: "/static.txt", header: []string{"Range: bytes=0-1,3-4"}, multipart: true},
	// 416 both, with Content-Range: bytes */18.
	{name: "range unsatisfiable", target: "/static.txt", header: []string{"Range: bytes=999-"}},
	{name: "if-range etag", target: "/static.txt", header: []string{"Range: bytes=0-3", "If-Range: {{etag}}"},
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "if-range date", target: "/static.txt", header: []string{"Range: bytes=0-3", "If-Range: {{lastmod}}"},
		diffs: []string{parityRangeAcceptRanges, parityCharset("text/plain")}},
	{name: "if-range stale", target: "/static.txt", header: []string{"Range: bytes=0-3", `If-Range: "0-0"`},
		diffs: []string{parityCharset("text/plain")}}, // the whole file, 200, both

	// A precompressed sibling. nginx runs with gzip_static on when it has
	// the module (docs/migrating.md: realroot's built-in equivalent);
	// without it, nginx sends style.css as it is (noGzipStatic).
	// Both send style.css.gz with Content-Encoding: gzip and its own ETag
	// and length. Vary: nginx's gzip_vary is off by default, realroot
	// always sends Vary: Accept-Encoding with a sibling. Neither offers
	// ranges of the sibling (no Accept-Ranges).
	{name: "gzip sibling", target: "/style.css", header: []string{"Accept-Encoding: gzip"},
		diffs: []string{
			parityCharset("text/css"),
			`vary: nginx <unset>; realroot "Accept-Encoding"`,
		},
		noGzipStatic: []string{
			`accept-ranges: nginx "bytes"; realroot <unset>`,
			`answer: nginx static style.css; realroot static style.css.gz`,
			`body: nginx "STATIC style.css\n"; realroot "STATIC style.css.gz\n"`,
			`content-encoding: nginx <unset>; realroot "gzip"`,
			`content-length: nginx "17"; realroot "20"`,
			parityCharset("text/css"),
			`etag: nginx "\"65937d25-11\""; realroot "\"65937d25-14\""`,
			`vary: nginx <unset>; realroot "Accept-Encoding"`,
		}},
	// A range with gzip accepted: nginx's gzip_static ignores the Range
	// and sends the whole style.css.gz (200); realroot serves the range
	// of style.css itself (206, no Content-Encoding, style.css's ETag),
	// as serveStatic means to. Both are valid answers.
	{name: "gzip sibling range", target: "/style.css", header: []string{"Accept-Encoding: gzip", "Range: bytes=-3"},
		diffs: []string{
			`status: nginx 200; realroot 206`,
			`answer: nginx static style.css.gz; realroot other`,
			parityRangeAcceptRanges,
			`body: nginx "STATIC style.css.gz\n"; realroot "ss\n"`,
			`content-encoding: nginx "gzip"; realroot <unset>`,
			`content-length: nginx "20"; realroot "3"`,
			`content-range: nginx <unset>; realroot "bytes 14-16/17"`,
			parityCharset("text/css"),
			`etag: nginx "\"65937d25-14\""; realroot "\"65937d25-11\""`,
		},
		noGzipStatic: []string{parityRangeAcceptRanges, parityCharset("text/css")}},
	{name: "gzip sibling not accepted", target: "/style.css", diffs: []string{parityCharset("text/css")}},

	// Request limits, each front with its defaults. Over 1m of body:
	// 413 both. A 9000-byte target: 414 both (nginx: the request line
	// outgrows large_client_header_buffers' 8k; realroot: max-uri-length
	// 8k). No Host in HTTP/1.1: 400 both. An unknown method: to PHP, both.
	// Expect: 100-continue: both send 100 Continue, then PHP gets the body.
	{name: "body over 1m", target: "/hello.php", meth: "POST", header: []string{"Content-Type: text/plain"},
		body: parityBigBody},
	{name: "target 9000 bytes", target: "/hello.php?q=" + strings.Repeat("a", 9000-len("/hello.php?q="))},
	// A 10 KiB header line: nginx 400 "Request Header Or Cookie Too
	// Large" (a line must fit one 8k large_client_header_buffers buffer);
	// realroot takes up to 64 KiB of header block (431 past it), and
	// PHP gets the header.
	{name: "header line 10k", target: "/hello.php", header: []string{"X-Big: " + strings.Repeat("b", 10<<10)},
		diffs: []string{`status: nginx 400; realroot 200`, `answer: nginx other; realroot php $ROOT/hello.php`}},
	{name: "http/1.1 no host", target: "/hello.php", header: []string{"Host:"}},
	{name: "unknown method", target: "/hello.php", meth: "FOO"},
	// nginx refuses the asterisk form (400); realroot answers it itself,
	// 200 with no body and Content-Length: 0, as Go's net/http does (RFC
	// 9110 §9.3.7: OPTIONS * asks about the server).
	{name: "options star", target: "*", meth: "OPTIONS",
		diffs: []string{`status: nginx 400; realroot 200`, `answer: nginx other; realroot empty`}},
	{name: "expect 100-continue", target: "/hello.php", meth: "POST",
		header: []string{"Content-Type: application/x-www-form-urlencoded", "Expect: 100-continue"}, body: "a=1"},
	// An expectation other than 100-continue: nginx ignores it and runs
	// the script; realroot answers 417 (RFC 9110 §10.1.1 allows it; as
	// net/http, docs/reliability.md).
	{name: "expect unknown", target: "/hello.php", header: []string{"Expect: foo"},
		diffs: []string{`status: nginx 200; realroot 417`, `answer: nginx php $ROOT/hello.php; realroot other`}},
	// The front's own address in absolute form: the same as origin form
	// (HTTP_HOST as in parityGlobalDiffs).
	{name: "absolute form own host", target: "http://{{addr}}/hello.php?q=1"},

	// PHP's own status and headers come through alike: a 404, a Location
	// without a status (302 from PHP, relative Location kept by both), two
	// Set-Cookie, no output (200, empty), its Content-Type, its
	// Content-Length (kept by both, no chunking).
	{name: "php status 404", target: "/status404.php", freeFraming: true},
	{name: "php location", target: "/location.php", freeFraming: true},
	{name: "php two cookies", target: "/cookies.php", freeFraming: true},
	{name: "php empty", target: "/empty.php", freeFraming: true},
	{name: "php json", target: "/json.php", freeFraming: true},
	{name: "php content-length", target: "/length.php"},
}

// parityCompareHTTP lists the differences parityCompare does not look at:
// interim responses, response headers (but parityIgnoredHeaders, and
// parityPageHeaders on a front's error page), the framing and the body
// (but a PHP dump's, whose params parityCompare compares). A multipart
// range answer is compared by its status and being multipart only: its
// boundary, and so its type, length and body, are each front's own.
func parityCompareHTTP(c parityCase, ng, re parityAnswer) []string {
	var d []string
	diff := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s: nginx %s; realroot %s", field, a, b))
		}
	}
	diff("interim", fmt.Sprint(ng.interim), fmt.Sprint(re.interim))
	if c.multipart {
		multi := func(a parityAnswer) string {
			return fmt.Sprint(strings.HasPrefix(a.ctype, "multipart/byteranges; boundary="))
		}
		diff("multipart", multi(ng), multi(re))
		return d
	}
	page := ng.errorPage() || re.errorPage()
	// A PHP dump's length is its params', compared by parityCompare.
	free := c.freeFraming || ng.php && re.php
	for _, k := range unionKeys(ng.header, re.header) {
		if parityIgnoredHeaders[k] || page && parityPageHeaders[k] || free && k == "Content-Length" {
			continue
		}
		diff(strings.ToLower(k), parityValues(ng.header[k]), parityValues(re.header[k]))
	}
	if page {
		return d
	}
	if ng.what == "other" || re.what == "other" {
		diff("content-type", fmt.Sprintf("%q", ng.ctype), fmt.Sprintf("%q", re.ctype))
	}
	if !free {
		diff("framing", ng.framing, re.framing)
	}
	if (!ng.php || !re.php) && ng.raw != re.raw {
		// Compared whole, shown in part (a 2 MiB body would be).
		d = append(d, fmt.Sprintf("body: nginx %.80q; realroot %.80q", ng.raw, re.raw))
	}
	return d
}

// errorPage reports whether a is a front's own error page (no PHP, no
// file answered), whose text is each front's own.
func (a parityAnswer) errorPage() bool {
	return a.status >= 400 && a.what == "other"
}

// parityValues writes a header's values for a difference.
func parityValues(v []string) string {
	switch len(v) {
	case 0:
		return "<unset>"
	case 1:
		return fmt.Sprintf("%q", v[0])
	}
	return fmt.Sprintf("%q", v)
}
