package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// The client of a request, behind trusted proxies (load balancers), like
// nginx's realip module with real_ip_recursive on. The peer is r.RemoteAddr:
// the TCP peer, or what a PROXY protocol listener put there, so the two
// compose. Only a peer in Options.TrustedProxies is believed:
//   - the client is the right-most X-Forwarded-For address that is not a
//     trusted proxy, walking from the right (the addresses a trusted proxy
//     appended are its own to vouch for, the rest the client's to invent);
//     if every address is trusted, the left-most; an element that is not
//     an address stops the walk at the last trusted one;
//   - REMOTE_PORT is then empty (the client's port is not known; nginx does
//     the same), or the port given with the address ("192.0.2.1:4711");
//   - X-Forwarded-Proto, its right-most value (the one the trusted peer
//     set), says whether the client used https: HTTPS=on and
//     REQUEST_SCHEME=https, or not, whatever the peer's own connection was.
// From any other peer these headers mean nothing: they reach PHP only as
// HTTP_X_FORWARDED_* params, and REMOTE_ADDR is the peer.

// client is where a request comes from, for PHP and the access log.
type client struct {
	addr, port string
	https      bool
	forwarded  bool // addr came from X-Forwarded-For
}

// client returns r's client: its peer, or the client a trusted proxy
// forwarded for.
func (h *Handler) client(r *http.Request) client {
	c := client{https: r.TLS != nil}
	c.addr, c.port = splitAddr(r.RemoteAddr)
	if len(h.opts.TrustedProxies) == 0 {
		return c
	}
	peer, err := netip.ParseAddr(c.addr)
	if err != nil || !h.trusted(peer) {
		return c
	}
	if v := lastElement(r.Header["X-Forwarded-Proto"]); v != "" {
		c.https = equalFoldASCII(v, "https")
	}
	if ap, ok := h.forwardedFor(r.Header["X-Forwarded-For"]); ok {
		c.addr, c.port, c.forwarded = ap.Addr().Unmap().String(), "", true
		if ap.Port() != 0 {
			c.port = strconv.Itoa(int(ap.Port()))
		}
	}
	return c
}

// remoteAddr is the access log's remote_addr: the peer's host:port, or the
// forwarded client's address.
func (h *Handler) remoteAddr(r *http.Request) string {
	if len(h.opts.TrustedProxies) == 0 {
		return r.RemoteAddr
	}
	c := h.client(r)
	if !c.forwarded {
		return r.RemoteAddr
	}
	if c.port != "" {
		return net.JoinHostPort(c.addr, c.port)
	}
	return c.addr
}

// trusted reports whether a is one of the trusted proxies.
func (h *Handler) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range h.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor walks the X-Forwarded-For values from the right and returns
// the first address that is not a trusted proxy; see client. ok is false
// when there is no usable address.
func (h *Handler) forwardedFor(values []string) (ap netip.AddrPort, ok bool) {
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for v != "" {
			var elem string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				elem, v = v[j+1:], v[:j]
			} else {
				elem, v = v, ""
			}
			if elem = strings.TrimSpace(elem); elem == "" {
				continue
			}
			a, valid := parseForwarded(elem)
			if !valid {
				return ap, ok // the last trusted address, if any
			}
			ap, ok = a, true
			if !h.trusted(a.Addr()) {
				return ap, true
			}
		}
	}
	return ap, ok
}

// parseForwarded parses an X-Forwarded-For element: an address, or an
// address with a port ("192.0.2.1:4711", "[2001:db8::1]:4711").
// An address with an IPv6 zone is refused: the zone is any text, which
// would reach REMOTE_ADDR and the access log (nginx's realip parses none).
func parseForwarded(s string) (netip.AddrPort, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 0), a.Zone() == ""
	}
	ap, err := netip.ParseAddrPort(s)
	return ap, err == nil && ap.Addr().Zone() == ""
}

// lastElement is the right-most element of comma-separated header values,
// trimmed.
func lastElement(values []string) string {
	if len(values) == 0 {
		return ""
	}
	v := values[len(values)-1]
	if j := strings.LastIndexByte(v, ','); j >= 0 {
		v = v[j+1:]
	}
	return strings.TrimSpace(v)
}
