package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/zap/zaptest"
)

// rawGet dials addr, writes pre (a PROXY header, or nothing), then,
// through TLS when cfg is not nil, a GET of /index.php. It returns the
// response's status, or the error when the connection ends without one.
func rawGet(addr string, pre []byte, cfg *tls.Config) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(pre); err != nil {
		return 0, err
	}
	c := conn
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return 0, err
		}
		c = tc
	}
	if _, err := io.WriteString(c, "GET /index.php HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func proxyHeader(t *testing.T, h *proxyproto.Header) []byte {
	t.Helper()
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProxyProtocol sends PROXY headers from a trusted peer (their client
// address is REMOTE_ADDR and the access log's), then, after a reload that
// no longer trusts it, from an untrusted one (refused; the spoofed address
// never reaches PHP).
func TestProxyProtocol(t *testing.T) {
	fpm, c := fakePHP(t)
	c.ProxyProtocol = true
	c.TrustedProxies = []string{"192.0.2.0/24", "127.0.0.1"}
	td := startDaemon(t, c)

	tcp := func(ip string, port int) *net.TCPAddr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	tests := []struct {
		name string
		give []byte
		want map[string]string // PHP's params; nil: refused
	}{
		{"v1", []byte("PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n"),
			map[string]string{"REMOTE_ADDR": "203.0.113.7", "REMOTE_PORT": "51234", "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "8080"}},
		{"v2", proxyHeader(t, proxyproto.HeaderProxyFromAddrs(2, tcp("2001:db8::7", 4711), tcp("2001:db8::1", 443))),
			map[string]string{"REMOTE_ADDR": "2001:db8::7", "REMOTE_PORT": "4711", "SERVER_ADDR": "2001:db8::1", "SERVER_PORT": "443"}},
		{"v2 LOCAL", proxyHeader(t, &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}),
			map[string]string{"REMOTE_ADDR": "127.0.0.1"}},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), map[string]string{"REMOTE_ADDR": "127.0.0.1"}},
		{"v2 UDP", proxyHeader(t, proxyproto.HeaderProxyFromAddrs(2,
			&net.UDPAddr{IP: net.ParseIP("203.0.113.8"), Port: 1}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2})), nil},
		{"v1 malformed", []byte("PROXY TCP4 203.0.113.9 nonsense\r\n"), nil},
		{"no header", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(fpm.Requests())
			status, err := rawGet(td.addr, tt.give, nil)
			if tt.want == nil {
				if err == nil || len(fpm.Requests()) != n {
					t.Errorf("got %d, %v, %d requests to PHP; want the connection closed, none", status, err, len(fpm.Requests())-n)
				}
				return
			}
			if status != 200 || len(fpm.Requests()) != n+1 {
				t.Fatalf("got %d, %v, %d requests to PHP; want 200, 1", status, err, len(fpm.Requests())-n)
			}
			p := fpm.Last().Params
			for k, want := range tt.want {
				if p[k] != want {
					t.Errorf("PHP gets %s=%q; want %q", k, p[k], want)
				}
			}
		})
	}
	var remotes []string
	for _, l := range td.logged("request") {
		remotes = append(remotes, fmt.Sprint(l["remote_addr"]))
	}
	if got := strings.Join(remotes, " "); !strings.Contains(got, "203.0.113.7:51234") || !strings.Contains(got, "[2001:db8::7]:4711") {
		t.Errorf("access log remote_addr: %s; want the PROXY header's", got)
	}

	// 127.0.0.1 trusted no more: its header is refused, and without one it
	// is the client.
	c.TrustedProxies = []string{"192.0.2.0/24"}
	if td.reload(t, c) {
		t.Fatal("reload rejected")
	}
	n := len(fpm.Requests())
	if status, err := rawGet(td.addr, []byte("PROXY TCP4 203.0.113.66 127.0.0.1 51234 8080\r\n"), nil); err == nil {
		t.Errorf("untrusted peer with a PROXY header: %d; want the connection closed", status)
	}
	if status, err := rawGet(td.addr, nil, nil); status != 200 || err != nil {
		t.Fatalf("untrusted peer without a header: %d, %v; want 200", status, err)
	}
	for _, r := range fpm.Requests()[n:] {
		if r.Params["REMOTE_ADDR"] != "127.0.0.1" {
			t.Errorf("after the reload, PHP gets REMOTE_ADDR=%q; want only 127.0.0.1", r.Params["REMOTE_ADDR"])
		}
	}
	refused := td.logged("proxy protocol: connection refused")
	if len(refused) == 0 || !strings.Contains(fmt.Sprint(refused[len(refused)-1]["error"]), "isn't allowed to send one") {
		t.Errorf("refusal log lines: %v; want one for the untrusted header", refused)
	}

	// Emptying trusted-proxy while proxy-protocol (restart-only) stays on
	// is rejected.
	c.ProxyProtocol, c.TrustedProxies = false, nil
	if !td.reload(t, c) {
		t.Error("reload to no trusted-proxy while proxy-protocol is on: accepted")
	}
}

// TestProxyProtocolTLS: the PROXY header comes before the TLS handshake,
// and PHP gets both the client address and HTTPS=on.
func TestProxyProtocolTLS(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "a.pem"), filepath.Join(dir, "a.key")
	ca.leaf(cert, key, "app.test")
	fpm, c := fakePHP(t)
	c.TLSCert, c.TLSKey = []string{cert}, []string{key}
	c.ProxyProtocol, c.TrustedProxies = true, []string{"127.0.0.0/8"}
	td := startDaemon(t, c)

	cfg := &tls.Config{ServerName: "app.test", RootCAs: ca.pool}
	status, err := rawGet(td.addr, []byte("PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"), cfg)
	if status != 200 || err != nil {
		t.Fatalf("GET with a PROXY header over TLS: %d, %v", status, err)
	}
	p := fpm.Last().Params
	if p["REMOTE_ADDR"] != "203.0.113.7" || p["HTTPS"] != "on" || p["SERVER_PORT"] != "443" {
		t.Errorf("PHP gets REMOTE_ADDR=%q HTTPS=%q SERVER_PORT=%q; want 203.0.113.7, on, 443", p["REMOTE_ADDR"], p["HTTPS"], p["SERVER_PORT"])
	}
	if _, err := rawGet(td.addr, nil, cfg); err == nil {
		t.Errorf("TLS from a trusted peer without a PROXY header succeeded; want refused")
	}
}

// TestProxyConnHalfClose: a connection accepted behind a PROXY header
// offers CloseWrite and SetLinger (the HTTP servers look for them to
// half-close before refusing a body, and proxy/h1 to reset an aborted
// response), and they act on its TCP connection: the peer reads the bytes
// written, then EOF, while the connection still reads.
func TestProxyConnHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := newProxyPolicy([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, zaptest.NewLogger(t)).listener(ln, 5*time.Second)
	defer pl.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	client.Write(proxyHeader(t, &proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}, DestinationAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}}))
	io.WriteString(client, "ping")

	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read behind the PROXY header: %q, %v", buf, err)
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if _, ok2 := c.(interface{ SetLinger(int) error }); !ok || !ok2 {
		t.Fatalf("%T: CloseWrite %v, SetLinger %v; want both", c, ok, ok2)
	}
	io.WriteString(c, "pong")
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(client); err != nil || string(b) != "pong" {
		t.Errorf("peer after CloseWrite: %q, %v; want \"pong\" then EOF", b, err)
	}
	io.WriteString(client, "more") // the other direction is still open
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "more" {
		t.Errorf("read after CloseWrite: %q, %v", buf, err)
	}
}
