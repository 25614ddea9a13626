package proxy

import (
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// TestParams asserts the exact FastCGI params sent for a table of requests,
// with a recording responder: PHP itself hides some of them (it drops
// HTTP_PROXY), so only the wire tells.
func TestParams(t *testing.T) {
	dir := newDeploy(t, map[string]string{
		"public/index.php":     "<?php",
		"public/api.php":       "<?php",
		"public/sub/index.php": "<?php",
	}, "A")
	srv := fcgitest.Start(t, func(_ *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	rs := newReleases(t, filepath.Join(dir, "current", "public"))
	root := rs.Current().Root
	if want := filepath.Join(dir, "releases/A/public"); root != mustEval(t, want) {
		t.Fatalf("release root = %q; want %q", root, want)
	}

	base := map[string]string{
		"GATEWAY_INTERFACE": "CGI/1.1",
		"SERVER_SOFTWARE":   "realroot",
		"REDIRECT_STATUS":   "200",
		"REQUEST_SCHEME":    "http",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"REMOTE_ADDR":       "192.0.2.7",
		"REMOTE_PORT":       "41000",
		"SERVER_ADDR":       "127.0.0.1",
		"SERVER_PORT":       "8080",
		"SERVER_NAME":       "example.test",
		"HTTP_HOST":         "example.test:8080",
		"DOCUMENT_ROOT":     root,
		"CONTENT_TYPE":      "",
		"CONTENT_LENGTH":    "",
		"PATH_INFO":         "",
		"HTTP_X_REQUEST_ID": "rid-1",
	}
	with := func(kv ...string) map[string]string {
		m := maps.Clone(base)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<absent>" {
				delete(m, kv[i])
				continue
			}
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	tests := []struct {
		name   string
		opts   Options
		method string
		target string
		header http.Header
		body   string
		chunk  bool
		want   map[string]string
		stdin  string
	}{
		{
			name: "script", method: "GET", target: "/index.php?a=1&b=%20",
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/index.php?a=1&b=%20",
				"QUERY_STRING", "a=1&b=%20", "REQUEST_METHOD", "GET"),
		},
		{
			name: "front controller", method: "GET", target: "/blog/hello%20world?page=2",
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/blog/hello%20world?page=2",
				"QUERY_STRING", "page=2", "REQUEST_METHOD", "GET"),
		},
		{
			name: "directory index", method: "GET", target: "/sub/",
			want: with("SCRIPT_FILENAME", root+"/sub/index.php", "SCRIPT_NAME", "/sub/index.php",
				"DOCUMENT_URI", "/sub/index.php", "REQUEST_URI", "/sub/",
				"QUERY_STRING", "", "REQUEST_METHOD", "GET"),
		},
		{
			name: "path info", method: "GET", target: "/api.php/users/%C3%A9?x",
			want: with("SCRIPT_FILENAME", root+"/api.php", "SCRIPT_NAME", "/api.php",
				"PATH_INFO", "/users/é", "PATH_TRANSLATED", root+"/users/é",
				"DOCUMENT_URI", "/api.php", "REQUEST_URI", "/api.php/users/%C3%A9?x",
				"QUERY_STRING", "x", "REQUEST_METHOD", "GET"),
		},
		{
			name: "headers", method: "GET", target: "/index.php",
			header: http.Header{
				"Proxy":        {"http://evil.test:3128"},
				"X-Foo_bar":    {"spoof"},
				"X-Foo.bar":    {"spoof"},
				"X-Foo-Bar":    {"real"},
				"Cookie":       {"a=1", "b=2"},
				"Accept":       {"text/html", "*/*"},
				"X-Request-Id": {"client-id-9"},
				"User-Agent":   {"test/1.0"},
			},
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/index.php",
				"QUERY_STRING", "", "REQUEST_METHOD", "GET",
				"HTTP_X_FOO_BAR", "real", "HTTP_COOKIE", "a=1; b=2", "HTTP_ACCEPT", "text/html, */*",
				"HTTP_USER_AGENT", "test/1.0", "HTTP_X_REQUEST_ID", "client-id-9"),
		},
		{
			name: "post", method: "POST", target: "/index.php",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}},
			body:   "a=1&b=2",
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/index.php",
				"QUERY_STRING", "", "REQUEST_METHOD", "POST",
				"CONTENT_TYPE", "application/x-www-form-urlencoded", "CONTENT_LENGTH", "7",
				"HTTP_CONTENT_TYPE", "application/x-www-form-urlencoded", "HTTP_CONTENT_LENGTH", "7"),
			stdin: "a=1&b=2",
		},
		{
			name: "chunked post gets a content length", method: "POST", target: "/index.php",
			body: strings.Repeat("x", 100<<10), chunk: true,
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/index.php",
				"QUERY_STRING", "", "REQUEST_METHOD", "POST", "CONTENT_LENGTH", "102400"),
			stdin: strings.Repeat("x", 100<<10),
		},
		{
			name:   "server name and extra params",
			opts:   Options{ServerName: "www.example.test", Params: map[string]string{"APP_ENV": "prod", "SERVER_SOFTWARE": "nginx"}},
			method: "GET", target: "/index.php",
			want: with("SCRIPT_FILENAME", root+"/index.php", "SCRIPT_NAME", "/index.php",
				"DOCUMENT_URI", "/index.php", "REQUEST_URI", "/index.php",
				"QUERY_STRING", "", "REQUEST_METHOD", "GET",
				"SERVER_NAME", "www.example.test", "APP_ENV", "prod", "SERVER_SOFTWARE", "nginx"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.FrontController = "/index.php"
			h := New(rs, &fcgi.Client{Network: "unix", Address: srv.Socket}, opts)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
				if tt.chunk {
					body = io.MultiReader(body) // hides the length
				}
			}
			r := httptest.NewRequest(tt.method, "http://example.test:8080"+tt.target, body)
			r.RequestURI = tt.target
			r.RemoteAddr = "192.0.2.7:41000"
			r.Header = tt.header.Clone()
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if tt.body != "" && !tt.chunk {
				r.Header.Set("Content-Length", "7")
			}
			if tt.chunk {
				r.ContentLength = -1
			}
			if r.Header.Get("X-Request-Id") == "" {
				r.Header.Set("X-Request-Id", "rid-1")
			}
			local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 || w.Body.String() != "ok" {
				t.Fatalf("got %d %q; want 200 ok", w.Code, w.Body.String())
			}
			got := srv.Last()
			for _, k := range slices.Sorted(maps.Keys(union(got.Params, tt.want))) {
				g, gok := got.Params[k]
				w, wok := tt.want[k]
				if g != w || gok != wok {
					t.Errorf("param %s = %q (sent %v); want %q (sent %v)", k, g, gok, w, wok)
				}
			}
			if string(got.Stdin) != tt.stdin {
				t.Errorf("stdin = %d bytes; want %d", len(got.Stdin), len(tt.stdin))
			}
		})
	}
}

func union(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

func mustEval(t testing.TB, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
