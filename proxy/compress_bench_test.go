package proxy

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/yookoala/gofast"

	"realroot/proxy/fcgi"
)

// pageUpstream answers every request with the same PHP-like page, in
// process: the benchmark measures realroot's work, not php-fpm's.
type pageUpstream struct {
	resp fcgi.Response
	body bytes.Reader
	page []byte
}

func (u *pageUpstream) Do(context.Context, *gofast.Request) (*fcgi.Response, error) {
	u.body.Reset(u.page)
	u.resp.Body = nopReadCloser{&u.body}
	return &u.resp, nil
}

type nopReadCloser struct{ *bytes.Reader }

func (nopReadCloser) Close() error { return nil }

// discardWriter is a ResponseWriter that counts and drops the body.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }
func (w *discardWriter) Flush()                      {}

// BenchmarkCompressedPHP measures ServeHTTP of a 20 KiB PHP-like HTML page
// from an in-process upstream: as it is (identity), gzip (level 5) and br
// (quality 4). sent/op is the body's size on the wire.
func BenchmarkCompressedPHP(b *testing.B) {
	dir := newDeploy(b, map[string]string{"public/index.php": "<?php"}, "A")
	page := []byte(htmlPage(20 << 10))
	up := &pageUpstream{page: page, resp: fcgi.Response{Status: http.StatusOK,
		Header: http.Header{"Content-Type": {"text/html; charset=UTF-8"}}}}
	h := New(newReleases(b, filepath.Join(dir, "current", "public")), up, Options{FrontController: "/index.php"})
	for _, tt := range []struct{ name, ae, want string }{
		{name: "identity", ae: "", want: ""},
		{name: "gzip", ae: "gzip, deflate", want: "gzip"},
		{name: "br", ae: "gzip, deflate, br", want: "br"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/app/orders", nil)
			r.RemoteAddr = "192.0.2.10:51234"
			r.Header.Set("Accept-Encoding", tt.ae)
			r.Header.Set("User-Agent", "bench")
			w := &discardWriter{h: make(http.Header)}
			b.SetBytes(int64(len(page)))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.n = 0
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK || w.h.Get("Content-Encoding") != tt.want {
					b.Fatalf("got %d Content-Encoding %q; want 200 %q", w.status, w.h.Get("Content-Encoding"), tt.want)
				}
			}
			b.ReportMetric(float64(w.n), "sent/op")
		})
	}
}
