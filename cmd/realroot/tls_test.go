package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"realroot/conf"
	"realroot/internal/fcgitest"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	t      *testing.T
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	serial atomic.Int64
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "realroot test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.serial.Store(100)
	return ca
}

// leaf writes a certificate for names, signed by ca, and its ECDSA key to
// certFile and keyFile (replacing them), and returns its serial number.
func (ca *testCA) leaf(certFile, keyFile string, names ...string) int64 {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.leafKey(certFile, keyFile, key, names...)
}

// leafKey is leaf with the given key; names may be none.
func (ca *testCA) leafKey(certFile, keyFile string, key crypto.Signer, names ...string) int64 {
	ca.t.Helper()
	serial := ca.serial.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "realroot test leaf"},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		ca.t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return serial
}

// testDaemon is the daemon run in the test process, with signals sent on
// a channel and its log in a buffer.
type testDaemon struct {
	addr string      // the first listen address
	log  *syncBuffer // the log and the JSON access log
	sigs chan os.Signal
	next atomic.Pointer[conf.Config] // what a reload reads
	stop func()                      // SIGTERM, then wait; also at cleanup
}

// startDaemon runs the daemon with c until stop or the test's end.
func startDaemon(t *testing.T, c conf.Config) *testDaemon {
	t.Helper()
	if err := validate(&c); err != nil {
		t.Fatal(err)
	}
	td := &testDaemon{log: &syncBuffer{}, sigs: make(chan os.Signal, 1)}
	td.next.Store(&c)
	logs, err := newLogs(c, td.log)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cfg: c, logs: logs, log: logs.main, reload: func() (conf.Config, error) { return *td.next.Load(), nil }}
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- d.run(nil, nil, nil, td.sigs, func(a []net.Addr) { addrc <- a[0] }) }()
	select {
	case a := <-addrc:
		td.addr = a.String()
	case err := <-errc:
		logs.close()
		t.Fatalf("run: %v\n%s", err, td.log)
	}
	var once sync.Once
	td.stop = func() {
		once.Do(func() {
			td.sigs <- syscall.SIGTERM
			if err := <-errc; err != nil {
				t.Errorf("run after SIGTERM: %v", err)
			}
			logs.close()
		})
	}
	t.Cleanup(func() {
		td.stop()
		if t.Failed() {
			t.Logf("log:\n%s", td.log)
		}
	})
	return td
}

// logged returns the log lines with message msg.
func (td *testDaemon) logged(msg string) []map[string]any {
	return (&proc{out: td.log}).logged(msg)
}

// reload sends SIGHUP with c as the configuration read, and waits until
// the reload is logged as done or rejected. It returns whether it was
// rejected.
func (td *testDaemon) reload(t *testing.T, c conf.Config) (rejected bool) {
	t.Helper()
	const okMsg, badMsg = "config reloaded", "reload rejected; the running configuration is kept"
	before := len(td.logged(okMsg)) + len(td.logged(badMsg))
	bad := len(td.logged(badMsg))
	td.next.Store(&c)
	td.sigs <- syscall.SIGHUP
	eventually(t, 5*time.Second, func() string {
		if len(td.logged(okMsg))+len(td.logged(badMsg)) == before {
			return "the reload is neither done nor rejected"
		}
		return ""
	})
	return len(td.logged(badMsg)) > bad
}

// fakePHP is a FastCGI responder answering "ok" and recording the params,
// and a site whose public/index.php routes to it.
func fakePHP(t *testing.T) (*fcgitest.Server, conf.Config) {
	t.Helper()
	fpm := fcgitest.Start(t, func(req *fcgitest.Request, stdout io.Writer) error {
		_, err := io.WriteString(stdout, "Content-Type: text/plain\r\n\r\nok")
		return err
	})
	c := conf.Default()
	c.Root = filepath.Join(site(t), "current", "public")
	c.FastCGI = []string{"unix:" + fpm.Socket}
	c.Listen = []string{"127.0.0.1:0"}
	c.ReleaseChecks = false
	return fpm, c
}

// dialTLS makes a TLS connection to addr with server name sni, checking
// the certificate against ca, and returns the served certificate's serial.
func dialTLS(addr, sni string, ca *testCA, configure func(*tls.Config)) (int64, error) {
	cfg := &tls.Config{ServerName: sni, RootCAs: ca.pool}
	if configure != nil {
		configure(cfg)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// httpsClient is a client of https://NAME/ URLs that connects to addr and
// trusts ca; h2 says whether it may use HTTP/2.
func httpsClient(addr string, ca *testCA, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestTLS serves HTTPS with two certificates: each SNI name gets its own,
// HTTP/2 is negotiated, PHP sees HTTPS=on, old protocols and ciphers are
// refused, port 80 redirects, and SIGHUP loads new certificate files (an
// invalid pair is rejected) without breaking open connections.
func TestTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	bCert, bKey := filepath.Join(dir, "b.pem"), filepath.Join(dir, "b.key")
	aSerial := ca.leaf(aCert, aKey, "a.test")
	bSerial := ca.leaf(bCert, bKey, "b.test", "*.c.test")

	fpm, c := fakePHP(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent()) // the redirect listener stops too
	c.TLSCert, c.TLSKey = []string{aCert, bCert}, []string{aKey, bKey}
	c.HTTPSRedirect = "127.0.0.1:0"
	td := startDaemon(t, c)
	_, port, _ := net.SplitHostPort(td.addr)

	for _, tt := range []struct {
		sni  string
		want int64
	}{
		{"a.test", aSerial},
		{"b.test", bSerial},
		{"B.Test", bSerial},
		{"x.c.test", bSerial},
		{"other.test", aSerial}, // the default, which the client then refuses
	} {
		got, err := dialTLS(td.addr, tt.sni, ca, func(cfg *tls.Config) {
			cfg.InsecureSkipVerify = tt.sni == "other.test"
		})
		if err != nil || got != tt.want {
			t.Errorf("SNI %s: certificate serial %d, %v; want %d", tt.sni, got, err, tt.want)
		}
	}
	if got, err := dialTLS(td.addr, "", ca, func(cfg *tls.Config) { cfg.InsecureSkipVerify = true }); err != nil || got != aSerial {
		t.Errorf("no SNI: certificate serial %d, %v; want the first, %d", got, err, aSerial)
	}

	// Too old a protocol, or a TLS 1.2 suite without forward secrecy or
	// AEAD, is refused.
	for name, configure := range map[string]func(*tls.Config){
		"TLS 1.1": func(cfg *tls.Config) { cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 },
		"TLS 1.2 CBC": func(cfg *tls.Config) {
			cfg.MaxVersion, cfg.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		},
	} {
		if _, err := dialTLS(td.addr, "a.test", ca, configure); err == nil {
			t.Errorf("%s: handshake succeeded; want it refused", name)
		}
	}
	if got, err := dialTLS(td.addr, "a.test", ca, func(cfg *tls.Config) { cfg.MaxVersion = tls.VersionTLS12 }); err != nil || got != aSerial {
		t.Errorf("TLS 1.2 with Go's suites: %d, %v; want served", got, err)
	}

	// HTTP/2 and HTTP/1.1 over TLS; PHP is told the request was https.
	for _, h2 := range []bool{true, false} {
		client := httpsClient(td.addr, ca, h2)
		resp, err := client.Get("https://a.test/index.php?q=1")
		if err != nil {
			t.Fatalf("h2 %v: %v", h2, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		client.CloseIdleConnections()
		wantMajor, wantProto := 1, "HTTP/1.1"
		if h2 {
			wantMajor, wantProto = 2, "HTTP/2.0"
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != wantMajor {
			t.Errorf("GET over TLS (h2 %v): %d %s; want 200 HTTP/%d", h2, resp.StatusCode, resp.Proto, wantMajor)
		}
		p := fpm.Last().Params
		for k, want := range map[string]string{"HTTPS": "on", "REQUEST_SCHEME": "https", "SERVER_PROTOCOL": wantProto, "SERVER_NAME": "a.test", "SERVER_PORT": port} {
			if p[k] != want {
				t.Errorf("h2 %v: PHP gets %s=%q; want %q", h2, k, p[k], want)
			}
		}
	}
	// Plain HTTP to the HTTPS port gets Go's 400, not a request to PHP.
	n := len(fpm.Requests())
	if status, _, _ := get(http.DefaultClient, "http://"+td.addr+"/index.php"); status != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: %d; want 400", status)
	}
	if len(fpm.Requests()) != n {
		t.Errorf("plain HTTP to the TLS port reached PHP")
	}

	// The redirect listener.
	serving := td.logged("serving")
	if len(serving) != 1 || serving[0]["tls"] != true {
		t.Fatalf("serving lines: %v; want one with tls true", serving)
	}
	redirect, _ := serving[0]["https_redirect"].(string)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+redirect+"/a/b.php?x=1&y=%2F", nil)
	req.Host = "a.test"
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://a.test:" + port + "/a/b.php?x=1&y=%2F"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Errorf("redirect: %d to %q; want 301 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	// Reload with a new certificate for a.test while a keep-alive
	// connection is open: new connections get it, the open one goes on.
	kept := httpsClient(td.addr, ca, false)
	defer kept.CloseIdleConnections()
	keptGet := func() (reused bool, serial int64, err error) {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://a.test/index.php", nil)
		resp, err := kept.Do(req)
		if err != nil {
			return false, 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return reused, 0, fmt.Errorf("status %d", resp.StatusCode)
		}
		return reused, resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}
	if _, serial, err := keptGet(); err != nil || serial != aSerial {
		t.Fatalf("keep-alive GET: %d, %v; want %d", serial, err, aSerial)
	}
	a2Serial := ca.leaf(aCert, aKey, "a.test")
	if td.reload(t, c) {
		t.Fatalf("reload with a new certificate rejected: %v", td.logged("reload rejected; the running configuration is kept"))
	}
	if got, err := dialTLS(td.addr, "a.test", ca, nil); err != nil || got != a2Serial {
		t.Errorf("after reload, a new connection gets serial %d, %v; want the new %d", got, err, a2Serial)
	}
	if reused, serial, err := keptGet(); err != nil || !reused || serial != aSerial {
		t.Errorf("after reload, the open connection: reused %v, serial %d, %v; want reused, %d", reused, serial, err, aSerial)
	}

	// An invalid pair is rejected with its files named; the running
	// certificates stay.
	ca.leaf(filepath.Join(dir, "other.pem"), aKey, "a.test") // a.key no longer matches a.pem
	if !td.reload(t, c) {
		t.Fatalf("reload with a mismatched key accepted")
	}
	rej := td.logged("reload rejected; the running configuration is kept")
	if got := fmt.Sprint(rej[len(rej)-1]["errors"]); !strings.Contains(got, "tls-cert "+aCert+" with tls-key "+aKey+": tls: private key does not match public key") {
		t.Errorf("rejection logs %s; want the pair and why", got)
	}
	if got, err := dialTLS(td.addr, "a.test", ca, nil); err != nil || got != a2Serial {
		t.Errorf("after a rejected reload, serial %d, %v; want the running %d", got, err, a2Serial)
	}
	if _, _, err := keptGet(); err != nil {
		t.Errorf("after a rejected reload, the open connection: %v", err)
	}
	kept.CloseIdleConnections()
	td.stop()
}

// TestTLSStartErrors: a pair that cannot be loaded fails the start, naming
// its files.
func TestTLSStartErrors(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	ca.leaf(aCert, aKey, "a.test")
	missing := filepath.Join(dir, "missing.key")
	for _, tt := range []struct {
		name, cert, key, want string
	}{
		{"missing key", aCert, missing, "tls-cert " + aCert + " with tls-key " + missing + ": open " + missing + ": no such file or directory"},
		{"key as cert", aKey, aKey, "tls-cert " + aKey + " with tls-key " + aKey + ": tls: failed to find certificate PEM data"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			code := run([]string{"--root", "/srv/app/current/public", "--listen", "127.0.0.1:0",
				"--tls-cert", tt.cert, "--tls-key", tt.key}, func(string) string { return "" }, &out, &out, nil)
			if code != 1 || !strings.Contains(out.String(), tt.want) {
				t.Errorf("exit %d, output %q; want 1 and %q", code, out.String(), tt.want)
			}
		})
	}
}

// TestH2C serves HTTP/2 with prior knowledge on a plain listener, and
// HTTP/1.1 still.
func TestH2C(t *testing.T) {
	fpm, c := fakePHP(t)
	c.H2C = true
	td := startDaemon(t, c)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 10 * time.Second}
	defer h2c.CloseIdleConnections()
	for _, client := range []*http.Client{h2c, {Timeout: 10 * time.Second}} {
		resp, err := client.Get("http://" + td.addr + "/index.php")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		wantMajor := 1
		if client == h2c {
			wantMajor = 2
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != wantMajor {
			t.Errorf("GET: %d %s; want 200 HTTP/%d", resp.StatusCode, resp.Proto, wantMajor)
		}
		if p := fpm.Last().Params; p["REQUEST_SCHEME"] != "http" || p["HTTPS"] != "" {
			t.Errorf("h2c: PHP gets REQUEST_SCHEME=%q HTTPS=%q; want http and none", p["REQUEST_SCHEME"], p["HTTPS"])
		}
	}
}

func TestRedirectHandler(t *testing.T) {
	tests := []struct {
		name, port, host, target, want string
	}{
		{"443", "443", "example.com", "/a?b=1", "https://example.com/a?b=1"},
		{"443 with port", "443", "example.com:80", "/", "https://example.com/"},
		{"other port", "8443", "example.com:8080", "/x%20y", "https://example.com:8443/x%20y"},
		{"ipv6", "443", "[2001:db8::1]:80", "/", "https://[2001:db8::1]/"},
		{"ipv6 other port", "8443", "[2001:db8::1]", "/", "https://[2001:db8::1]:8443/"},
		{"no host", "443", "", "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			r.Host = tt.host
			w := httptest.NewRecorder()
			redirectHandler(tt.port).ServeHTTP(w, r)
			if tt.want == "" {
				if w.Code != http.StatusBadRequest {
					t.Errorf("status %d; want 400", w.Code)
				}
				return
			}
			if got := w.Header().Get("Location"); w.Code != http.StatusMovedPermanently || got != tt.want {
				t.Errorf("got %d %q; want 301 %q", w.Code, got, tt.want)
			}
		})
	}
}

// TestKeepRestartOnlyTLS: certificate files reload, but turning TLS on or
// off, the redirect, h2c and the PROXY protocol need a restart.
func TestKeepRestartOnlyTLS(t *testing.T) {
	withTLS := conf.Default()
	withTLS.TLSCert, withTLS.TLSKey = []string{"/a.pem"}, []string{"/a.key"}
	tests := []struct {
		name      string
		old       conf.Config
		give      func(c *conf.Config)
		wantKept  []string
		wantCerts []string
	}{
		{"new files", withTLS, func(c *conf.Config) { c.TLSCert, c.TLSKey = []string{"/b.pem"}, []string{"/b.key"} }, nil, []string{"/b.pem"}},
		{"TLS off", withTLS, func(c *conf.Config) { c.TLSCert, c.TLSKey = nil, nil }, []string{"tls-cert", "tls-key"}, []string{"/a.pem"}},
		{"TLS on", conf.Default(), func(c *conf.Config) { c.TLSCert, c.TLSKey = []string{"/b.pem"}, []string{"/b.key"} }, []string{"tls-cert", "tls-key"}, nil},
		{"listeners", withTLS, func(c *conf.Config) {
			c.HTTPSRedirect, c.ProxyProtocol, c.TrustedProxies = "0.0.0.0:80", true, []string{"10.0.0.0/8"}
		}, []string{"https-redirect", "proxy-protocol"}, []string{"/a.pem"}},
		{"h2c", conf.Default(), func(c *conf.Config) { c.H2C = true }, []string{"h2c"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.old
			tt.give(&c)
			kept := keepRestartOnly(&c, tt.old)
			if !reflect.DeepEqual(kept, tt.wantKept) || !reflect.DeepEqual(c.TLSCert, tt.wantCerts) {
				t.Errorf("kept %q, tls-cert %q; want %q, %q", kept, c.TLSCert, tt.wantKept, tt.wantCerts)
			}
		})
	}
}

// TestCheckTLS: realroot check loads the certificates and names them, or
// says why a pair fails.
func TestCheckTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	ca.leaf(aCert, aKey, "a.test", "*.a.test")
	day := time.Now().Add(time.Hour).UTC().Format(time.DateOnly)
	missing := filepath.Join(dir, "missing.key")
	for _, tt := range []struct{ key, want string }{
		{aKey, "tls: ok (a.test *.a.test until " + day + ")\n"},
		{missing, "tls: failed: tls-cert " + aCert + " with tls-key " + missing + ": open " + missing + ": no such file or directory\n"},
	} {
		var out strings.Builder
		run([]string{"check", "--root", "/nonexistent/current", "--tls-cert", aCert, "--tls-key", tt.key},
			func(string) string { return "" }, &out, &out, nil)
		if !strings.Contains(out.String(), tt.want) {
			t.Errorf("check with tls-key %s printed:\n%s\nwant the line %q", tt.key, out.String(), tt.want)
		}
	}
}
