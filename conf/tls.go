package conf

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
)

// validateTLS checks the settings of what the listen addresses speak: TLS,
// h2c, the redirect to HTTPS, the PROXY protocol and the trusted proxies.
// Whether the files can be read is checked when they are loaded (at start
// and on reload), not here.
func (c *Config) validateTLS(bad func(key, format string, a ...any)) {
	for _, f := range []struct {
		key   string
		paths []string
	}{{"tls-cert", c.TLSCert}, {"tls-key", c.TLSKey}} {
		for _, p := range f.paths {
			if !filepath.IsAbs(p) {
				bad(f.key, "%q is not an absolute path", p)
			}
		}
	}
	switch nc, nk := len(c.TLSCert), len(c.TLSKey); {
	case nc > 0 && nk == 0:
		bad("tls-key", "required with tls-cert: one key file per certificate, in the same order")
	case nk > 0 && nc == 0:
		bad("tls-cert", "required with tls-key: one certificate file per key, in the same order")
	case nc != nk:
		bad("tls-key", "%d files for %d tls-cert files; want one key per certificate, in the same order", nk, nc)
	}
	if c.HTTPSRedirect != "" {
		_, port, err := net.SplitHostPort(c.HTTPSRedirect)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			bad("https-redirect", "%q is not host:port", c.HTTPSRedirect)
		} else if len(c.TLSCert) == 0 {
			bad("https-redirect", "%q needs tls-cert: it redirects to HTTPS on the listen addresses", c.HTTPSRedirect)
		} else if n != 0 && slices.Contains(c.Listen, c.HTTPSRedirect) {
			bad("https-redirect", "%q is also a listen address", c.HTTPSRedirect)
		}
	}
	if c.H2C && len(c.TLSCert) > 0 {
		bad("h2c", "not with tls-cert: over TLS, HTTP/2 is negotiated (ALPN); h2c is for plain-HTTP listen addresses")
	}
	if c.ProxyProtocol && len(c.TrustedProxies) == 0 {
		bad("proxy-protocol", "needs trusted-proxy: the load balancers allowed to send a PROXY header")
	}
	for _, s := range c.TrustedProxies {
		if _, err := ParsePrefix(s); err != nil {
			bad("trusted-proxy", "%v", err)
		}
	}
}

// ParsePrefix parses a trusted-proxy: an address (10.0.0.1, 2001:db8::1)
// or a CIDR prefix (10.0.0.0/8, 2001:db8::/32), whose host bits are
// dropped.
func ParsePrefix(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q is not an address or a CIDR prefix like 10.0.0.0/8", s)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, bad
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
