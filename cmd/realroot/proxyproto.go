package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"

	"realroot/conf"
)

// The PROXY protocol (HAProxy's, v1 text and v2 binary) on the listen
// addresses: a load balancer that passes TCP through (and TLS with it)
// prefixes each connection with the client's address, which becomes the
// connection's RemoteAddr, so REMOTE_ADDR, REMOTE_PORT and the access log's
// remote_addr, and the address X-Forwarded-For is then judged from.
//
// Only a peer in trusted-proxy is believed, and it must send a header
// (proxyproto.REQUIRE): a trusted load balancer that forgets it would
// otherwise make every client look like the load balancer. Any other peer
// must not send one (proxyproto.REJECT): its connection is closed before a
// request is read, so a spoofed address never reaches PHP. IGNORE (drop the
// header, serve the rest) would hide a misconfiguration and serve requests
// from a peer that claims to be a proxy.

// proxyPolicy decides, per connection, whether a PROXY header is required
// or refused. Its trusted peers change on reload.
type proxyPolicy struct {
	trusted atomic.Pointer[[]netip.Prefix]
	log     *zap.Logger
}

func newProxyPolicy(trusted []netip.Prefix, log *zap.Logger) *proxyPolicy {
	p := &proxyPolicy{log: log}
	p.trusted.Store(&trusted)
	return p
}

// connPolicy is the proxyproto.ConnPolicyFunc. It never returns an error:
// proxyproto.Listener.Accept would return it, and http.Server.Serve stop.
func (p *proxyPolicy) connPolicy(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	ta, ok := o.Upstream.(*net.TCPAddr)
	if !ok {
		return proxyproto.REJECT, nil
	}
	a := ta.AddrPort().Addr().Unmap()
	for _, pfx := range *p.trusted.Load() {
		if pfx.Contains(a) {
			return proxyproto.REQUIRE, nil
		}
	}
	return proxyproto.REJECT, nil
}

// listener wraps ln: each connection's first read takes the PROXY header.
// headerTimeout bounds the wait for it.
func (p *proxyPolicy) listener(ln net.Listener, headerTimeout time.Duration) net.Listener {
	return &proxyListener{
		Listener: &proxyproto.Listener{
			Listener:          ln,
			ConnPolicy:        p.connPolicy,
			ValidateHeader:    validateProxyHeader,
			ReadHeaderTimeout: headerTimeout,
		},
		log: p.log,
	}
}

// validateProxyHeader accepts a header for a TCP connection over IPv4 or
// IPv6, and LOCAL (a load balancer's own health check: the connection's
// addresses are kept). A UDP or unix socket source makes no REMOTE_ADDR.
func validateProxyHeader(h *proxyproto.Header) error {
	if h.Command.IsLocal() {
		return nil
	}
	if h.TransportProtocol != proxyproto.TCPv4 && h.TransportProtocol != proxyproto.TCPv6 {
		return fmt.Errorf("proxy protocol: transport %#x is not TCP over IPv4 or IPv6", byte(h.TransportProtocol))
	}
	return nil
}

// proxyListener hands out proxyConns.
type proxyListener struct {
	*proxyproto.Listener
	log *zap.Logger
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return c, nil // SKIP, which the policy never returns
	}
	if st, ok := pc.Raw().(*sendTimeoutConn); ok {
		st.peer = pc // its log line names the client, not the load balancer
	}
	return &proxyConn{Conn: pc, l: l}, nil
}

// proxyConn turns a refused or malformed PROXY header into a read error
// that http.Server drops silently (a *net.OpError with Op "read"), instead
// of answering 400 to a peer that is no HTTP client, and logs it once
// (under TLS, http.Server also reports it as a handshake error, which
// httpErrorLog logs at debug).
// Embedding *proxyproto.Conn keeps its ReadFrom (sendfile) and the
// rewritten RemoteAddr and LocalAddr.
type proxyConn struct {
	*proxyproto.Conn
	l       *proxyListener
	started bool // the first read was done; only it reads the header
}

func (c *proxyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.started || err == nil {
		c.started = true
		return n, err
	}
	c.started = true
	if err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, new(*net.OpError)) {
		return n, err // the network's, not the header's
	}
	raw := c.Raw()
	// A trusted peer without a header is also a load balancer's TCP
	// health check, which connects and closes: debug only.
	lvl := zap.WarnLevel
	if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
		lvl = zap.DebugLevel
	}
	if ce := c.l.log.Check(lvl, "proxy protocol: connection refused"); ce != nil {
		ce.Write(zap.Stringer("peer", raw.RemoteAddr()), zap.Error(err))
	}
	return 0, &net.OpError{Op: "read", Net: "tcp", Source: raw.LocalAddr(), Addr: raw.RemoteAddr(), Err: err}
}

// trustedPrefixes is c's trusted-proxy, parsed (Validate checked it).
func trustedPrefixes(c conf.Config) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range c.TrustedProxies {
		if p, err := conf.ParsePrefix(s); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// CloseWrite and SetLinger reach the TCP connection under the PROXY
// header, so that the HTTP servers can half-close before refusing a body
// (the client then reads the answer instead of a reset) and reset an
// aborted response (proxy/h1), as on a plain listener.
func (c *proxyConn) CloseWrite() error {
	if cw, ok := c.Raw().(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *proxyConn) SetLinger(sec int) error {
	if sl, ok := c.Raw().(interface{ SetLinger(int) error }); ok {
		return sl.SetLinger(sec)
	}
	return nil
}
