package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
)

// frontend is what the listen addresses speak beyond plain HTTP/1.1: TLS
// with certificates chosen by SNI, HTTP/2 (over TLS, or h2c), the PROXY
// protocol, and the plain-HTTP listener that redirects to HTTPS. Whether
// each is on is fixed at start (restart-only); the certificates and the
// PROXY protocol's trusted peers are replaced on reload.
type frontend struct {
	log   *zap.Logger
	tls   *tls.Config // nil without tls-cert
	certs atomic.Pointer[certSet]
	h2c   bool
	proxy *proxyPolicy // nil without proxy-protocol

	headerTimeout time.Duration
	idleTimeout   time.Duration
	sendTimeout   time.Duration
	redirectAddr  string       // https-redirect
	redirect      *http.Server // nil until startRedirect
	redirectLn    net.Listener
	redirectDone  chan struct{}
}

// newFrontend loads c's certificates: a pair that cannot be read or does
// not match fails the start with its files named.
func newFrontend(c conf.Config, log *zap.Logger) (*frontend, error) {
	fe := &frontend{
		log:           log,
		h2c:           c.H2C,
		headerTimeout: c.HeaderTimeout,
		sendTimeout:   c.SendTimeout,
		idleTimeout:   c.IdleTimeout,
		redirectAddr:  c.HTTPSRedirect,
	}
	if len(c.TLSCert) > 0 {
		set, err := loadCerts(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, err
		}
		fe.certs.Store(set)
		set.log(log)
		fe.tls = newTLSConfig(nil)
		// Each handshake takes one load's configuration, its certificates
		// and its session ticket keys together.
		fe.tls.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return fe.certs.Load().tls, nil
		}
	}
	if c.ProxyProtocol {
		fe.proxy = newProxyPolicy(trustedPrefixes(c), log.Named("proxy-protocol"))
	}
	return fe, nil
}

// newTLSConfig is the listeners' TLS configuration: TLS 1.2 and 1.3; for
// TLS 1.2, only ECDHE key exchanges with AEAD ciphers (forward secrecy, no
// CBC, no RSA key exchange; TLS 1.3's suites are all of that kind and are
// not configurable); X25519 with ML-KEM (post-quantum, Go's default when a
// client offers it), X25519 and P-256; h2 offered before http/1.1.
func newTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, // HTTP/2 requires one of these two
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		NextProtos:       []string{"h2", "http/1.1"},
		GetCertificate:   get,
	}
}

// wrap makes ln's connections give up a write after send-timeout, read a
// PROXY header, then speak TLS, as configured.
func (fe *frontend) wrap(ln net.Listener) net.Listener {
	ln = fe.guardSend(ln)
	if fe.proxy != nil {
		ln = fe.proxy.listener(ln, fe.headerTimeout)
	}
	if fe.tls != nil {
		ln = tls.NewListener(ln, fe.tls)
	}
	return ln
}

// configure sets hs's protocols: HTTP/1.1, plus HTTP/2 over TLS (ALPN) or
// without it (h2c, prior knowledge only).
func (fe *frontend) configure(hs *http.Server) {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	if fe.tls != nil {
		hs.TLSConfig = fe.tls
		p.SetHTTP2(true)
	}
	if fe.h2c {
		p.SetUnencryptedHTTP2(true)
	}
	hs.Protocols = p
}

// httpErrorLog is the listen addresses' http.Server.ErrorLog: at warn, but
// a TLS handshake that failed at debug. Such a peer never sent a request:
// a load balancer's TCP health check that connects and closes (after a
// PROXY header or none, which the PROXY protocol already logged), a port
// scanner, a client that accepts none of the protocols or certificates
// (nginx logs these at info, below its default error_log level).
func httpErrorLog(log *zap.Logger) *stdlog.Logger {
	return stdlog.New(handshakeLevels{log}, "", 0)
}

type handshakeLevels struct{ log *zap.Logger }

func (w handshakeLevels) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	lvl := zap.WarnLevel
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		lvl = zap.DebugLevel
	}
	if ce := w.log.Check(lvl, msg); ce != nil {
		ce.Write()
	}
	return len(p), nil
}

// guardSend makes ln's connections give up a write after send-timeout.
func (fe *frontend) guardSend(ln net.Listener) net.Listener {
	if fe.sendTimeout <= 0 {
		return ln
	}
	return &sendTimeoutListener{Listener: ln, timeout: fe.sendTimeout, log: fe.log.Named("http")}
}

// prepare loads c's certificates for a reload, without using them yet:
// commit swaps them (and the PROXY protocol's trusted peers) in once the
// rest of the reload succeeded. An error rejects the reload; the running
// certificates stay.
func (fe *frontend) prepare(c conf.Config) (commit func(), err error) {
	var set *certSet
	if fe.tls != nil {
		if set, err = loadCerts(c.TLSCert, c.TLSKey); err != nil {
			return nil, err
		}
	}
	trusted := trustedPrefixes(c)
	if fe.proxy != nil && len(trusted) == 0 {
		return nil, errors.New("trusted-proxy: at least one address is required while proxy-protocol is on (turning proxy-protocol off needs a restart)")
	}
	return func() {
		if set != nil {
			fe.certs.Store(set)
			set.log(fe.log)
		}
		if fe.proxy != nil {
			fe.proxy.trusted.Store(&trusted)
		}
	}, nil
}

// fields describe the frontend in the "serving" log line.
func (fe *frontend) fields() []zap.Field {
	fs := []zap.Field{zap.Bool("tls", fe.tls != nil)}
	if fe.h2c {
		fs = append(fs, zap.Bool("h2c", true))
	}
	if fe.proxy != nil {
		fs = append(fs, zap.Bool("proxy_protocol", true))
	}
	if fe.redirectLn != nil {
		fs = append(fs, zap.Stringer("https_redirect", fe.redirectLn.Addr()))
	}
	return fs
}

// startRedirect listens on https-redirect, if set, and answers every
// request there with a redirect to the same URL over HTTPS on https's port.
func (fe *frontend) startRedirect(https net.Addr) error {
	if fe.redirectAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", fe.redirectAddr)
	if err != nil {
		return fmt.Errorf("https-redirect: %w", err)
	}
	ln = fe.guardSend(ln)
	port := "443"
	if ta, ok := https.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	}
	errLog, _ := zap.NewStdLogAt(fe.log.Named("https-redirect"), zap.WarnLevel)
	fe.redirectLn, fe.redirectDone = ln, make(chan struct{})
	fe.redirect = &http.Server{
		Handler:           redirectHandler(port),
		ReadHeaderTimeout: fe.headerTimeout,
		IdleTimeout:       fe.idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	go func() {
		defer close(fe.redirectDone)
		if err := fe.redirect.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			fe.log.Error("https-redirect stopped", zap.Error(err))
		}
	}()
	return nil
}

// stop closes the redirect listener and waits, until ctx is done, for its
// requests.
func (fe *frontend) stop(ctx context.Context) {
	if fe == nil || fe.redirect == nil {
		return
	}
	if err := fe.redirect.Shutdown(ctx); err != nil {
		fe.redirect.Close()
	}
	<-fe.redirectDone
}

// redirectHandler answers 301 to https://host/path?query, host being the
// request's Host without its port, with :port unless port is 443 (nginx's
// return 301 https://$host$request_uri).
func redirectHandler(port string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" {
			http.Error(w, "400 Bad Request: no Host", http.StatusBadRequest)
			return
		}
		if port != "443" {
			host = net.JoinHostPort(host, port)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if r.URL.Opaque != "" || !strings.HasPrefix(r.URL.Path, "/") {
			// "x:.evil.example/p" would join the host: https://good.example.evil.example/p.
			http.Error(w, "400 Bad Request: not a path", http.StatusBadRequest)
			return
		}
		u := url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, u.String(), http.StatusMovedPermanently)
	})
}

// certSet is one load of the certificate pairs.
type certSet struct {
	certs  []*tls.Certificate // as configured; the first is the default
	files  []string           // each one's tls-cert file
	byName map[string][]*tls.Certificate
	// tls serves the handshakes of this load. Its session tickets are
	// sealed with keys of its own: a session from before a reload is not
	// resumed, so that the client is shown the new certificate (nginx's
	// reload also makes new ticket keys).
	tls *tls.Config
}

// loadCerts reads the pairs of cert and key files, the n-th cert with the
// n-th key. Every pair that fails is named.
func loadCerts(certFiles, keyFiles []string) (*certSet, error) {
	if len(certFiles) == 0 || len(certFiles) != len(keyFiles) {
		return nil, fmt.Errorf("tls-key: %d for %d tls-cert files; want one key per certificate", len(keyFiles), len(certFiles))
	}
	s := &certSet{byName: map[string][]*tls.Certificate{}}
	var errs []error
	for i, cf := range certFiles {
		c, err := tls.LoadX509KeyPair(cf, keyFiles[i])
		if err == nil && c.Leaf == nil {
			c.Leaf, err = x509.ParseCertificate(c.Certificate[0])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tls-cert %s with tls-key %s: %w", cf, keyFiles[i], err))
			continue
		}
		s.certs = append(s.certs, &c)
		s.files = append(s.files, cf)
		for _, name := range c.Leaf.DNSNames {
			name = strings.ToLower(name)
			s.byName[name] = append(s.byName[name], &c)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s.tls = newTLSConfig(func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		return s.certificate(hello), nil
	})
	s.tls.WrapSession = s.tls.EncryptTicket
	s.tls.UnwrapSession = s.tls.DecryptTicket
	return s, nil
}

// certificate is the pair for hello's server name: the first whose names
// match exactly, then by wildcard, that the client supports (an ECDSA and
// an RSA certificate may share names), else the first that matches. With
// no name, or one that none matches, it is the first pair the client
// supports, else the first: the default, as nginx's default server picks
// among its certificates.
func (s *certSet) certificate(hello *tls.ClientHelloInfo) *tls.Certificate {
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	cands := s.byName[name]
	if i := strings.IndexByte(name, '.'); i > 0 {
		cands = append(cands[:len(cands):len(cands)], s.byName["*"+name[i:]]...)
	}
	if len(cands) == 0 {
		// SupportsCertificate also wants the name in the certificate.
		anyName := *hello
		anyName.ServerName = ""
		hello, cands = &anyName, s.certs
	}
	for _, c := range cands {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	return cands[0]
}

// describe is check's detail: each certificate's names and expiry.
func (s *certSet) describe() string {
	if s == nil {
		return ""
	}
	var b []string
	for _, c := range s.certs {
		b = append(b, strings.Join(c.Leaf.DNSNames, " ")+" until "+c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	return strings.Join(b, "; ")
}

// log logs each certificate: its file, names and expiry; a warning for
// one that expired or is not valid yet, or that has no DNS name (only
// served as the default if it is the first, else never).
func (s *certSet) log(log *zap.Logger) {
	now := time.Now()
	for i, c := range s.certs {
		fields := []zap.Field{
			zap.String("cert", s.files[i]),
			zap.Strings("names", c.Leaf.DNSNames),
			zap.Time("not_after", c.Leaf.NotAfter),
		}
		switch {
		case now.After(c.Leaf.NotAfter):
			log.Warn("tls certificate expired", fields...)
		case now.Before(c.Leaf.NotBefore):
			log.Warn("tls certificate not valid yet", append(fields, zap.Time("not_before", c.Leaf.NotBefore))...)
		case len(c.Leaf.DNSNames) == 0 && i == 0:
			log.Warn("tls certificate has no DNS names; it is only served as the default", fields...)
		case len(c.Leaf.DNSNames) == 0:
			log.Warn("tls certificate has no DNS names and is not the first; it is never served", fields...)
		default:
			log.Info("tls certificate loaded", fields...)
		}
	}
}
