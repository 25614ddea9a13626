package proxy

import (
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/yookoala/gofast"
)

// FastCGI params are built by a gofast middleware chain, in nginx's order:
// the route's params (SCRIPT_FILENAME, DOCUMENT_ROOT, ...) are set by
// serveFastCGI from the pinned release; then cgiParams maps what Debian's
// nginx fastcgi_params maps from the request and its connection;
// headerParams maps the request headers to HTTP_*; extraParams adds the
// configured params last, so they override.

// endParams ends the params chain: the exchange itself is proxy/fcgi's.
func endParams(gofast.Client, *gofast.Request) (*gofast.ResponsePipe, error) { return nil, nil }

// cgiParams maps the request and connection variables of nginx's
// fastcgi_params.
func (h *Handler) cgiParams(inner gofast.SessionHandler) gofast.SessionHandler {
	return func(c gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
		r, p := req.Raw, req.Params
		p["QUERY_STRING"] = r.URL.RawQuery
		p["REQUEST_METHOD"] = r.Method
		p["CONTENT_TYPE"] = firstValue(r.Header["Content-Type"]) // keys are canonical
		p["REQUEST_URI"] = requestURI(r)
		p["SERVER_PROTOCOL"] = r.Proto
		p["GATEWAY_INTERFACE"] = "CGI/1.1"
		p["SERVER_SOFTWARE"] = h.opts.ServerSoftware
		p["REDIRECT_STATUS"] = "200"
		// The client, behind trusted proxies (realip.go).
		cl := h.client(r)
		if cl.https {
			p["REQUEST_SCHEME"] = "https"
			p["HTTPS"] = "on"
		} else {
			p["REQUEST_SCHEME"] = "http"
		}
		p["REMOTE_ADDR"], p["REMOTE_PORT"] = cl.addr, cl.port
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			p["SERVER_ADDR"], p["SERVER_PORT"] = h.local.split(a)
		}
		if h.opts.ServerName != "" {
			p["SERVER_NAME"] = h.opts.ServerName
		} else {
			p["SERVER_NAME"] = hostOnly(r.Host)
		}
		return inner(c, req)
	}
}

// headerParams maps every request header to HTTP_NAME, as nginx does. Names
// with "_" or "." are dropped, so that X-Foo_Bar cannot pose as X-Foo-Bar
// once both become HTTP_X_FOO_BAR, and Proxy is dropped (HTTPoxy, CVE-2016-5385).
// X-Request-Id is set by the handler.
func headerParams(inner gofast.SessionHandler) gofast.SessionHandler {
	return func(c gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
		r, p := req.Raw, req.Params
		if r.Host != "" {
			p["HTTP_HOST"] = r.Host
		}
		for name, values := range r.Header {
			key, ok := commonParamNames[name]
			if !ok {
				if name == "Proxy" || name == "X-Request-Id" || !plainName(name) {
					continue
				}
				key = paramName(name)
			}
			if len(values) == 1 {
				p[key] = values[0]
				continue
			}
			sep := ", "
			if name == "Cookie" {
				sep = "; "
			}
			p[key] = strings.Join(values, sep)
		}
		return inner(c, req)
	}
}

// extraParams adds the configured params.
func (h *Handler) extraParams(inner gofast.SessionHandler) gofast.SessionHandler {
	return func(c gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
		for k, v := range h.opts.Params {
			req.Params[k] = v
		}
		return inner(c, req)
	}
}

// commonParamNames caches the param names of common headers, so that most
// requests map their headers without allocating.
var commonParamNames = func() map[string]string {
	m := make(map[string]string)
	for _, h := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language",
		"Authorization", "Cache-Control", "Connection", "Content-Length",
		"Content-Type", "Cookie", "Dnt", "If-Match", "If-Modified-Since",
		"If-None-Match", "If-Range", "If-Unmodified-Since", "Origin", "Pragma",
		"Priority", "Range", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile",
		"Sec-Ch-Ua-Platform", "Sec-Fetch-Dest", "Sec-Fetch-Mode",
		"Sec-Fetch-Site", "Sec-Fetch-User", "Te", "Upgrade-Insecure-Requests",
		"User-Agent", "Via", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Real-Ip", "X-Requested-With",
	} {
		m[h] = paramName(h)
	}
	return m
}()

// paramName turns a header name into its param: X-Foo-Bar -> HTTP_X_FOO_BAR.
func paramName(header string) string {
	b := make([]byte, 0, len("HTTP_")+len(header))
	b = append(b, "HTTP_"...)
	for i := 0; i < len(header); i++ {
		c := header[i]
		switch {
		case c == '-':
			c = '_'
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b)
}

// plainName reports whether a header name is made of letters, digits and
// "-" only. nginx's ignore_invalid_headers drops the others, "_" and "."
// among them (X_Forwarded_For must not pass as HTTP_X_FORWARDED_FOR).
func plainName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i] | 0x20
		if !('a' <= c && c <= 'z' || '0' <= name[i] && name[i] <= '9' || name[i] == '-') {
			return false
		}
	}
	return true
}

// requestURI is nginx's $request_uri: the request target as sent, from its
// path on when the client sent an absolute URI (serve refused one without
// an authority).
func requestURI(r *http.Request) string {
	t := r.RequestURI
	if strings.HasPrefix(t, "/") {
		return t
	}
	if i := strings.Index(t, "://"); i >= 0 {
		t = t[i+3:]
		if j := strings.IndexAny(t, "/?#"); j >= 0 {
			t = t[j:]
		} else {
			t = ""
		}
	}
	if !strings.HasPrefix(t, "/") {
		return "/" + t
	}
	return t
}

// splitAddr splits host:port; an address without a port is all host.
func splitAddr(addr string) (host, port string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, ""
	}
	return host, port
}

// hostOnly strips the port from a Host header, as net.SplitHostPort would
// ("[::1]:80" -> "::1"), but without allocating an error for a Host that
// has no port.
func hostOnly(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 && i+1 < len(host) && host[i+1] == ':' {
			return host[1:i]
		}
		return host
	}
	if i := strings.IndexByte(host, ':'); i >= 0 && strings.IndexByte(host[i+1:], ':') < 0 {
		return host[:i]
	}
	return host
}

// localAddr remembers the strings of the last local address seen: every
// connection to one listener has the same, so SERVER_ADDR and SERVER_PORT
// cost no allocation after the first request.
type localAddr struct {
	last atomic.Pointer[localStrings]
}

type localStrings struct {
	ip          net.IP
	port        int
	host, sport string
}

func (l *localAddr) split(a net.Addr) (host, port string) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return splitAddr(a.String())
	}
	if c := l.last.Load(); c != nil && c.port == ta.Port && c.ip.Equal(ta.IP) {
		return c.host, c.sport
	}
	c := &localStrings{ip: ta.IP, port: ta.Port}
	c.host, c.sport = splitAddr(ta.String())
	l.last.Store(c)
	return c.host, c.sport
}

func firstValue(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
