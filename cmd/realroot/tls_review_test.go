package main

// From a review of TLS and certificate reload (tls.go, serve.go) against
// docs/tls.md and nginx: each test failed before its fix.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/internal/fcgitest"
)

// TestTLSHandshakeErrorsNotWarned: a load balancer's TCP health check
// connects and closes (with HAProxy's check-send-proxy, after a PROXY
// header) without a TLS handshake. docs/tls.md says it is logged at debug
// level; http.Server's "TLS handshake error" went to the log at warn, one
// line per check.
func TestTLSHandshakeErrorsNotWarned(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	ca.leaf(aCert, aKey, "a.test")
	for _, tt := range []struct {
		name  string
		proxy bool
		send  string // before closing
	}{
		{"tcp check", false, ""},
		{"tcp check with proxy header", true, "PROXY TCP4 127.0.0.1 127.0.0.1 1234 443\r\n"},
		{"trusted peer without proxy header", true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, c := fakePHP(t)
			c.TLSCert, c.TLSKey = []string{aCert}, []string{aKey}
			c.LogLevel = "debug"
			if tt.proxy {
				c.ProxyProtocol, c.TrustedProxies = true, []string{"127.0.0.1"}
			}
			td := startDaemon(t, c)
			conn, err := net.Dial("tcp", td.addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(conn, tt.send)
			conn.Close()
			var line map[string]any
			eventually(t, 5*time.Second, func() string {
				for _, l := range (&proc{out: td.log}).logLines() {
					if msg, _ := l["msg"].(string); strings.Contains(msg, "TLS handshake error") {
						line = l
						return ""
					}
				}
				return "no TLS handshake error logged"
			})
			if line["level"] != "debug" {
				t.Errorf("a health check's handshake error is logged at %v: %v; want debug", line["level"], line)
			}
		})
	}
}

// TestTLSNamelessCertWarning: a certificate without DNS names that is
// not the first is never served (SNI finds no name of it, the default is
// the first): its warning said "only served as the default".
func TestTLSNamelessCertWarning(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	nCert, nKey := filepath.Join(dir, "n.pem"), filepath.Join(dir, "n.key")
	ca.leaf(aCert, aKey, "a.test")
	ca.leaf(nCert, nKey)
	set, err := loadCerts([]string{aCert, nCert}, []string{aKey, nKey})
	if err != nil {
		t.Fatal(err)
	}
	for _, sni := range []string{"", "a.test", "other.test"} {
		if got := set.certificate(&tls.ClientHelloInfo{ServerName: sni}); got != set.certs[0] {
			t.Fatalf("SNI %q: not the first certificate", sni)
		}
	}
	core, logs := observer.New(zap.InfoLevel)
	set.log(zap.New(core))
	for _, e := range logs.All() {
		if e.ContextMap()["cert"] == nCert && strings.Contains(e.Message, "only served as the default") {
			t.Errorf("%s (never served, not the first) logged %q", nCert, e.Message)
		}
	}
}

// TestTLSRedirectStopsWithListeners: on SIGTERM the listen addresses
// stop accepting at once; the https-redirect listener went on accepting
// (and redirecting to the closed port) until every in-flight request was
// done, up to shutdown-timeout.
func TestTLSRedirectStopsWithListeners(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	ca.leaf(aCert, aKey, "a.test")
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, stdout io.Writer) error {
		started <- struct{}{}
		<-release
		_, err := io.WriteString(stdout, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	_, c := fakePHP(t)
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.TLSCert, c.TLSKey = []string{aCert}, []string{aKey}
	c.HTTPSRedirect = "127.0.0.1:0"
	td := startDaemon(t, c)
	redirect, _ := td.logged("serving")[0]["https_redirect"].(string)

	client := httpsClient(td.addr, ca, false)
	defer client.CloseIdleConnections()
	got := make(chan int, 1)
	go func() {
		status, _, _ := get(client, "https://a.test/index.php")
		got <- status
	}()
	<-started
	stopped := make(chan struct{})
	go func() { td.stop(); close(stopped) }()
	eventually(t, 5*time.Second, func() string {
		if len(td.logged("shutting down")) == 0 {
			return "not draining yet"
		}
		if _, err := net.DialTimeout("tcp", td.addr, time.Second); err == nil {
			return "the listen address still accepts"
		}
		return ""
	})
	deadline := time.Now().Add(3 * time.Second)
	var derr error
	for time.Now().Before(deadline) {
		var conn net.Conn
		if conn, derr = net.DialTimeout("tcp", redirect, time.Second); derr != nil {
			break
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if derr == nil {
		t.Errorf("draining with a request in flight: https-redirect %s still accepts while the HTTPS port %s refuses", redirect, td.addr)
	}
	close(release)
	if status := <-got; status != http.StatusOK {
		t.Errorf("in-flight request: %d; want 200", status)
	}
	<-stopped
}

// TestTLSResumedSessionAfterReload: after a reload with a new
// certificate, a client that resumes its TLS session (a ticket from before
// the reload) is never shown the new certificate: docs/tls.md says new
// connections get it (nginx's reload makes new ticket keys).
func TestTLSResumedSessionAfterReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	aSerial := ca.leaf(aCert, aKey, "a.test")
	_, c := fakePHP(t)
	c.TLSCert, c.TLSKey = []string{aCert}, []string{aKey}
	td := startDaemon(t, c)

	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cache := tls.NewLRUClientSessionCache(8)
		getOnce := func() (resumed bool, serial int64) {
			t.Helper()
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: ca.pool, ClientSessionCache: cache, MaxVersion: version},
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, td.addr)
				},
				DisableKeepAlives: true,
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://a.test/index.php")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.TLS.DidResume, resp.TLS.PeerCertificates[0].SerialNumber.Int64()
		}
		if _, serial := getOnce(); serial != aSerial {
			t.Fatalf("TLS %x: serial %d; want %d", version, serial, aSerial)
		}
		if resumed, _ := getOnce(); !resumed {
			t.Fatalf("TLS %x: the session was not resumed before the reload; the test proves nothing", version)
		}
		newSerial := ca.leaf(aCert, aKey, "a.test")
		if td.reload(t, c) {
			t.Fatal("reload rejected")
		}
		if resumed, serial := getOnce(); serial != newSerial {
			t.Errorf("TLS %x: after the reload, a new connection (resumed %v) is shown serial %d; want the new %d", version, resumed, serial, newSerial)
		}
		aSerial = newSerial
		// After the reload, sessions resume again.
		getOnce()
		if resumed, _ := getOnce(); !resumed {
			t.Errorf("TLS %x: sessions made after the reload are not resumed", version)
		}
	}
}

// TestTLSDefaultSupported: an ECDSA certificate first and an RSA one for
// the same names. A client that sends no name (or one not configured) and
// accepts only RSA gets the RSA certificate, as nginx's default server
// with both does, not the first certificate it cannot use.
func TestTLSDefaultSupported(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	ecCert, ecKey := filepath.Join(dir, "ec.pem"), filepath.Join(dir, "ec.key")
	rsaCert, rsaKey := filepath.Join(dir, "rsa.pem"), filepath.Join(dir, "rsa.key")
	ca.leaf(ecCert, ecKey, "a.test")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ca.leafKey(rsaCert, rsaKey, key, "a.test")
	set, err := loadCerts([]string{ecCert, rsaCert}, []string{ecKey, rsaKey})
	if err != nil {
		t.Fatal(err)
	}
	rsaOnly := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{
			ServerName:        name,
			CipherSuites:      []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS12},
			SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
			SupportedPoints:   []uint8{0},
			SignatureSchemes:  []tls.SignatureScheme{tls.PKCS1WithSHA256, tls.ECDSAWithP256AndSHA256},
		}
	}
	for _, name := range []string{"a.test", "", "other.test"} {
		if got := set.certificate(rsaOnly(name)); got != set.certs[1] {
			t.Errorf("server name %q, a client that accepts RSA only: got certificate %d; want the RSA one",
				name, slices.Index(set.certs, got))
		}
	}
	// A client that accepts both gets the first, the default.
	both := rsaOnly("")
	both.CipherSuites = append(both.CipherSuites, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
	if got := set.certificate(both); got != set.certs[0] {
		t.Errorf("no server name, a client that accepts both: got certificate %d; want the first", slices.Index(set.certs, got))
	}
}
