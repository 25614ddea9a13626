package proxy

import (
	"io"
	"strings"
	"testing"

	"realroot/internal/fcgitest"
)

// TestHeaderRules: configured headers go on static and PHP responses whose
// path matches; the first matching rule of a name wins, PHP's own header
// wins over a rule, realroot's error responses get none.
func TestHeaderRules(t *testing.T) {
	css := strings.Repeat("body{color:red}\n", 1024)
	ts, _ := newFakeSite(t, map[string]string{
		"index.php":       "<?php",
		"own.php":         "<?php",
		"app.css":         css,
		"admin/index.php": "<?php",
	}, Options{
		FrontController: "/index.php",
		CacheControl:    []CacheRule{{Match: ".css", Value: "public, max-age=60"}},
		Headers: []HeaderRule{
			{Match: "/admin", Name: "X-Frame-Options", Value: "DENY"},
			{Match: "*", Name: "X-Frame-Options", Value: "SAMEORIGIN"},
			{Match: "*", Name: "x-content-type-options", Value: "nosniff"},
			{Match: ".CSS", Name: "Access-Control-Allow-Origin", Value: "*"},
			{Match: ".css", Name: "Vary", Value: "Origin"},
			{Match: "*", Name: "Cache-Control", Value: "no-store"},
		},
	}, func(req *fcgitest.Request, w io.Writer) error {
		hd := "Content-Type: text/html\r\n"
		if req.Params["SCRIPT_NAME"] == "/own.php" {
			hd += "X-Frame-Options: ALLOW-FROM https://example.test\r\n"
		}
		_, err := io.WriteString(w, hd+"\r\nok")
		return err
	})

	const absent = ""
	tests := []struct {
		name   string
		target string
		ae     string
		status int
		want   map[string]string
	}{
		{name: "php", target: "/index.php", status: 200, want: map[string]string{
			"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff", "Access-Control-Allow-Origin": absent,
			"Cache-Control": "no-store"}},
		{name: "front controller", target: "/blog/post", status: 200, want: map[string]string{
			"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff"}},
		{name: "php's own header wins", target: "/own.php", status: 200, want: map[string]string{
			"X-Frame-Options": "ALLOW-FROM https://example.test", "X-Content-Type-Options": "nosniff"}},
		{name: "first matching rule wins", target: "/admin/", status: 200, want: map[string]string{
			"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}},
		{name: "redirect", target: "/admin", status: 301, want: map[string]string{"X-Frame-Options": "DENY"}},
		{name: "static, extension any case; Cache-Control rules win", target: "/app.css", status: 200, want: map[string]string{
			"X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff", "Access-Control-Allow-Origin": "*",
			"Cache-Control": "public, max-age=60", "Vary": "Origin"}},
		{name: "static compressed: vary appended", target: "/app.css", ae: "gzip", status: 200, want: map[string]string{
			"Vary": "Origin, Accept-Encoding", "Content-Encoding": "gzip"}},
		{name: "shared values never modified", target: "/app.css", status: 200, want: map[string]string{"Vary": "Origin"}},
		{name: "error responses get none", target: "/.env", status: 404, want: map[string]string{
			"X-Frame-Options": absent, "X-Content-Type-Options": "nosniff"}}, // nosniff is the error page's own
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := rawGet(t, "GET", ts.URL+tt.target, "Accept-Encoding", tt.ae)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d", resp.StatusCode, tt.status)
			}
			for k, v := range tt.want {
				if got := strings.Join(resp.Header.Values(k), ", "); got != v {
					t.Errorf("%s: %q; want %q", k, got, v)
				}
			}
		})
	}
}

func TestPathMatches(t *testing.T) {
	for _, tt := range []struct {
		match, p string
		want     bool
	}{
		{"*", "/", true},
		{".css", "/a/b.css", true},
		{".css", "/a/b.CSS", true},
		{".css", "/.css", true},
		{".css", ".css", false},
		{".css", "/a/b.scss", false},
		{"/admin", "/admin", true},
		{"/admin", "/admin/x", true},
		{"/admin", "/administrator", false},
		{"/admin/", "/admin/x", true},
	} {
		if got := pathMatches(tt.match, tt.p); got != tt.want {
			t.Errorf("pathMatches(%q, %q) = %v; want %v", tt.match, tt.p, got, tt.want)
		}
	}
}
