package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
	"realroot/proxy/fcgi"
)

// TestRealIP asserts the exact client params PHP gets behind proxies: only
// a trusted peer's X-Forwarded-For and X-Forwarded-Proto count, the chain is
// walked from the right, and the access log says the same.
func TestRealIP(t *testing.T) {
	dir := newDeploy(t, map[string]string{"index.php": "<?php"}, "A")
	srv := fcgitest.Start(t, func(_ *fcgitest.Request, w io.Writer) error {
		_, err := io.WriteString(w, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:1b::/48"),
		netip.MustParsePrefix("192.0.2.1/32"),
	}
	const absent = "<absent>"

	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		tls     bool
		header  http.Header
		want    map[string]string // params; absent: not sent
		wantLog string            // remote_addr
	}{
		{
			name: "no trusted proxies: headers are only headers", peer: "10.1.2.3:40000",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}},
			want: map[string]string{"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "40000", "HTTPS": absent, "REQUEST_SCHEME": "http",
				"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https"},
			wantLog: "10.1.2.3:40000",
		},
		{
			name: "untrusted peer cannot spoof", trusted: trusted, peer: "198.51.100.7:40000",
			header: http.Header{"X-Forwarded-For": {"10.0.0.1, 203.0.113.9"}, "X-Forwarded-Proto": {"https"}},
			want: map[string]string{"REMOTE_ADDR": "198.51.100.7", "REMOTE_PORT": "40000", "HTTPS": absent, "REQUEST_SCHEME": "http",
				"HTTP_X_FORWARDED_FOR": "10.0.0.1, 203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https"},
			wantLog: "198.51.100.7:40000",
		},
		{
			name: "trusted peer", trusted: trusted, peer: "10.1.2.3:40000",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want: map[string]string{"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "", "HTTPS": absent, "REQUEST_SCHEME": "http",
				"HTTP_X_FORWARDED_FOR": "203.0.113.9"},
			wantLog: "203.0.113.9",
		},
		{
			name: "chain walked from the right, spoofed left part ignored", trusted: trusted, peer: "10.1.2.3:40000",
			header: http.Header{"X-Forwarded-For": {"6.6.6.6, 203.0.113.9, 10.9.9.9", "192.0.2.1"}},
			want: map[string]string{"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": "", "HTTPS": absent, "REQUEST_SCHEME": "http",
				"HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9, 10.9.9.9, 192.0.2.1"},
			wantLog: "203.0.113.9",
		},
		{
			name: "every hop trusted: the left-most", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"10.7.7.7, 10.8.8.8"}},
			want:    map[string]string{"REMOTE_ADDR": "10.7.7.7", "REMOTE_PORT": ""},
			wantLog: "10.7.7.7",
		},
		{
			name: "garbage stops the walk at the last trusted hop", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"203.0.113.9, unknown, 10.8.8.8"}},
			want:    map[string]string{"REMOTE_ADDR": "10.8.8.8", "REMOTE_PORT": ""},
			wantLog: "10.8.8.8",
		},
		{
			name: "garbage right-most: the peer", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"203.0.113.9, <script>"}},
			want:    map[string]string{"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "40000"},
			wantLog: "10.1.2.3:40000",
		},
		{
			// netip parses an IPv6 zone, which is any text: it must not
			// reach REMOTE_ADDR (nginx's realip parses none).
			name: "zoned address: the peer", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"fe80::1%<script>alert(1)</script>"}},
			want:    map[string]string{"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "40000"},
			wantLog: "10.1.2.3:40000",
		},
		{
			name: "zoned address with a port: the peer", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"[fe80::1%' OR '1'='1]:80"}},
			want:    map[string]string{"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "40000"},
			wantLog: "10.1.2.3:40000",
		},
		{
			name: "address with a port", trusted: trusted, peer: "10.1.2.3:40000",
			header:  http.Header{"X-Forwarded-For": {"[2001:db8::7]:4711"}},
			want:    map[string]string{"REMOTE_ADDR": "2001:db8::7", "REMOTE_PORT": "4711"},
			wantLog: "[2001:db8::7]:4711",
		},
		{
			name: "IPv6 peer, IPv4-mapped client", trusted: trusted, peer: "[2001:db8:1b::5]:40000",
			header:  http.Header{"X-Forwarded-For": {"::ffff:203.0.113.9"}},
			want:    map[string]string{"REMOTE_ADDR": "203.0.113.9", "REMOTE_PORT": ""},
			wantLog: "203.0.113.9",
		},
		{
			name: "IPv4-mapped trusted peer", trusted: trusted, peer: "[::ffff:10.1.2.3]:40000",
			header:  http.Header{"X-Forwarded-For": {"203.0.113.9"}},
			want:    map[string]string{"REMOTE_ADDR": "203.0.113.9"},
			wantLog: "203.0.113.9",
		},
		{
			name: "trusted peer without X-Forwarded-For", trusted: trusted, peer: "10.1.2.3:40000",
			want:    map[string]string{"REMOTE_ADDR": "10.1.2.3", "REMOTE_PORT": "40000", "HTTPS": absent, "REQUEST_SCHEME": "http"},
			wantLog: "10.1.2.3:40000",
		},
		{
			name: "https from a trusted proxy", trusted: trusted, peer: "10.1.2.3:40000",
			header: http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"HTTPS"}},
			want: map[string]string{"REMOTE_ADDR": "203.0.113.9", "HTTPS": "on", "REQUEST_SCHEME": "https",
				"HTTP_X_FORWARDED_PROTO": "HTTPS"},
			wantLog: "203.0.113.9",
		},
		{
			name: "proto: the right-most value, the trusted peer's", trusted: trusted, peer: "10.1.2.3:40000",
			header: http.Header{"X-Forwarded-Proto": {"https, http"}},
			want:   map[string]string{"HTTPS": absent, "REQUEST_SCHEME": "http"},
		},
		{
			name: "https from an untrusted peer", trusted: trusted, peer: "198.51.100.7:40000",
			header: http.Header{"X-Forwarded-Proto": {"https"}},
			want:   map[string]string{"REMOTE_ADDR": "198.51.100.7", "HTTPS": absent, "REQUEST_SCHEME": "http"},
		},
		{
			name: "tls connection", trusted: trusted, peer: "198.51.100.7:40000", tls: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}},
			want:   map[string]string{"HTTPS": "on", "REQUEST_SCHEME": "https"},
		},
		{
			name: "tls from a trusted proxy that says http", trusted: trusted, peer: "10.1.2.3:40000", tls: true,
			header: http.Header{"X-Forwarded-Proto": {"http"}},
			want:   map[string]string{"HTTPS": absent, "REQUEST_SCHEME": "http"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			h := New(newReleases(t, filepath.Join(dir, "current")), &fcgi.Client{Network: "unix", Address: srv.Socket},
				Options{TrustedProxies: tt.trusted, AccessLog: zap.New(core)})
			r := httptest.NewRequest("GET", "http://example.test/index.php", nil)
			r.RemoteAddr = tt.peer
			for k, v := range tt.header {
				r.Header[k] = v
			}
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				t.Fatalf("status %d", w.Code)
			}
			got := srv.Last().Params
			for k, want := range tt.want {
				g, sent := got[k]
				if want == absent && sent {
					t.Errorf("param %s = %q; want it not sent", k, g)
				} else if want != absent && (!sent || g != want) {
					t.Errorf("param %s = %q (sent %v); want %q", k, g, sent, want)
				}
			}
			if tt.wantLog != "" {
				entries := logs.FilterMessage("request").All()
				if len(entries) != 1 || entries[0].ContextMap()["remote_addr"] != tt.wantLog {
					t.Errorf("access log: %v; want remote_addr %q", entries, tt.wantLog)
				}
			}
		})
	}
}

// TestTrustedProxiesNotModified: New leaves the caller's slice alone.
func TestTrustedProxiesNotModified(t *testing.T) {
	give := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")}
	New(nil, nil, Options{TrustedProxies: give})
	if give[0].String() != "10.1.2.3/8" {
		t.Fatalf("caller's prefix became %s", give[0])
	}
}
