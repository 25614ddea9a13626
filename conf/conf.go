// Package conf is realroot's configuration: one struct, its defaults,
// loading from a TOML file, the environment (REALROOT_*) and flags, and
// Validate.
//
// Precedence, lowest first: defaults, the config file (--config FILE or
// REALROOT_CONFIG), the environment, flags. Every setting has one name: the
// file key some-name, the flag --some-name and the environment variable
// REALROOT_SOME_NAME. List flags repeat (--deny /a --deny /b); in the file
// they are arrays and in the environment comma-separated (one item per line
// for param, cache-control, header and internal-location, whose values may
// hold commas).
package conf

import (
	"flag"
	"time"
)

// Config is every setting of realroot. The comment of each field gives its
// key (also its flag) and its default.
type Config struct {
	// File: config, the TOML file read before the environment and the
	// flags (flag and environment only). Default none.
	File string

	// Listen: listen, addresses to serve HTTP on. Default 127.0.0.1:8080.
	Listen []string
	// TLSCert: tls-cert, certificate files (PEM, the leaf first, then its
	// chain); with them, every listen address speaks HTTPS (and HTTP/2).
	// The n-th goes with the n-th tls-key; a client gets the first whose
	// names match its SNI, else the first. Re-read on reload. Default none:
	// plain HTTP.
	TLSCert []string
	// TLSKey: tls-key, the private key files (PEM) of tls-cert, in the same
	// order. Default none.
	TLSKey []string
	// HTTPSRedirect: https-redirect, host:port of a plain-HTTP listener
	// that answers 301 to https://host/path, with the first listen
	// address's port unless it is 443. Needs tls-cert. Default none: off.
	HTTPSRedirect string
	// H2C: h2c, also serve HTTP/2 without TLS (prior knowledge) on the
	// listen addresses, for a load balancer that speaks it. Not with
	// tls-cert, where HTTP/2 is negotiated. Default false.
	H2C bool
	// HTTP1Server: http1-server, what serves HTTP/1.x on plain (not TLS,
	// not h2c) listen addresses: "lean", realroot's own HTTP/1.1 loop
	// (proxy/h1), or "net/http", Go's standard server. Listeners with TLS
	// or h2c always use net/http. Default lean.
	HTTP1Server string
	// ProxyProtocol: proxy-protocol, read a PROXY protocol header (v1 or
	// v2) on each connection to the listen addresses: the client address
	// it gives is REMOTE_ADDR. A peer in trusted-proxy must send one; any
	// other peer must not (its connection is closed). Default false.
	ProxyProtocol bool
	// TrustedProxies: trusted-proxy, addresses or CIDR prefixes of the load
	// balancers believed about the client: their PROXY protocol header
	// (with proxy-protocol), their X-Forwarded-For and X-Forwarded-Proto.
	// Default none: every peer is the client.
	TrustedProxies []string
	// Root: root, the docroot; any component may be a symlink
	// (/srv/app/current/public). Required.
	Root string
	// FastCGI: fastcgi, php-fpm's addresses, unix:/path or host:port; with
	// several, each request goes to the one with the fewest in flight
	// (docs/upstreams.md). Default unix:/run/php/php8.2-fpm.sock (Debian's).
	FastCGI []string
	// PingPath: ping-path, php-fpm's ping.path, asked by realroot check,
	// /readyz and the upstream health check. Default none: they ask for a
	// script that does not exist.
	PingPath string
	// ServerName: server-name, SERVER_NAME for PHP. Default: the request's
	// Host without port.
	ServerName string
	// Index: index, files tried for a directory. Default index.php,index.html.
	Index []string
	// FrontController: front-controller, the script for paths naming no
	// file (try_files' last argument). Default /index.php; "off" disables it.
	FrontController string
	// PHPExtensions: php-ext, extensions sent to php-fpm. Default .php.
	PHPExtensions []string
	// MaxBodySize: max-body-size, largest request body (k, m, g suffixes;
	// 0 = no limit). Default 1m, like nginx's client_max_body_size.
	MaxBodySize Size
	// Params: param NAME=VALUE, extra FastCGI params. Default none.
	Params map[string]string
	// Deny: deny, URL path prefixes answered 403. Default none.
	Deny []string
	// CacheControl: cache-control PATTERN=VALUE, the Cache-Control header of
	// static files; the first matching rule wins. Default none.
	CacheControl []CacheRule
	// Headers: header PATTERN=NAME: VALUE, headers added to responses (static
	// and PHP) whose URL path matches; PHP's own header of that name wins.
	// Default none.
	Headers []HeaderRule
	// Compress: compress, gzip or brotli for clients that accept them, on
	// compressible types. Default true.
	Compress bool
	// CompressMinSize: compress-min-size, smallest body compressed. Default 1k.
	CompressMinSize Size
	// InternalLocations: internal-location PREFIX=DIR, where an
	// X-Accel-Redirect to a path under PREFIX is served from (nginx's
	// internal location); other X-Accel-Redirect paths are served from the
	// release. Default none.
	InternalLocations map[string]string
	// SendfileDirs: sendfile-dir, directories X-Sendfile may name files in.
	// Default none: X-Sendfile is ignored.
	SendfileDirs []string
	// BodyTimeout: body-timeout, longest wait between two reads of a
	// request body; a client that stalls longer gets 408 (nginx's
	// client_body_timeout). Default 60s.
	BodyTimeout time.Duration
	// MaxURILength: max-uri-length, longest request target (path and
	// query); a longer one gets 414 (nginx's large_client_header_buffers).
	// Default 8k.
	MaxURILength Size
	// BufferResponses: buffer-responses, read each php-fpm response whole
	// (in memory, then a temp file) before sending it, so that a slow
	// client holds no php-fpm worker (nginx's fastcgi_buffering). Event
	// streams and X-Accel-Buffering: no always stream. Default false: every
	// response streams.
	BufferResponses bool

	// DialTimeout: dial-timeout, connecting to php-fpm. Default 5s.
	DialTimeout time.Duration
	// ReadTimeout: read-timeout, longest wait between two reads from
	// php-fpm (nginx's fastcgi_read_timeout). Default 60s.
	ReadTimeout time.Duration
	// WriteTimeout: write-timeout, longest wait between two writes to
	// php-fpm (fastcgi_send_timeout). Default 60s.
	WriteTimeout time.Duration
	// HeaderTimeout: header-timeout, reading a request's headers
	// (client_header_timeout). Default 60s.
	HeaderTimeout time.Duration
	// IdleTimeout: idle-timeout, an idle client keep-alive connection
	// (keepalive_timeout). Default 75s.
	IdleTimeout time.Duration
	// SendTimeout: send-timeout, longest wait for a client to take the
	// next bytes of a response; then the connection is closed, or the
	// HTTP/2 stream reset (nginx's send_timeout). Default 60s.
	SendTimeout time.Duration
	// ShutdownTimeout: shutdown-timeout, finishing in-flight requests on
	// SIGTERM. Default 30s.
	ShutdownTimeout time.Duration

	// MaxConns: max-conns, connections to each php-fpm address at most;
	// set it to php-fpm's pm.max_children. Default 8.
	MaxConns int
	// ConnIdleTimeout: conn-idle-timeout, how long an idle php-fpm
	// connection is kept open. Default 5s.
	ConnIdleTimeout time.Duration
	// QueueTimeout: queue-timeout, how long a request waits for a php-fpm
	// connection when max-conns are busy (then 503). Default 10s.
	QueueTimeout time.Duration
	// MaxQueue: max-queue, requests waiting for a php-fpm connection at
	// most (more get 503 at once). Default 1024.
	MaxQueue int
	// KeepAlive: keepalive, reuse php-fpm connections (FCGI_KEEP_CONN).
	// Default true.
	KeepAlive bool
	// UpstreamFailTimeout: upstream-fail-timeout, with several fastcgi
	// addresses, how long one is skipped after a request or health check
	// could not connect to it or timed out (nginx's fail_timeout with
	// max_fails=1). Default 10s.
	UpstreamFailTimeout time.Duration
	// UpstreamHealthInterval: upstream-health-interval, with several
	// fastcgi addresses, how often each is asked a FastCGI request
	// (ping-path, else a missing script) to mark it down or up (0 = off).
	// Default 0.
	UpstreamHealthInterval time.Duration

	// PollInterval: poll-interval, re-reading the root's symlinks (and statting its directory) for
	// filesystems without change events (0 = off). Default 1s.
	PollInterval time.Duration
	// LogLevel: log-level, debug, info, warn or error. Default info.
	LogLevel string
	// LogFile: log-file, where the log goes. Default stderr.
	LogFile string
	// AccessLog: access-log, json, combined, ltsv or off. Default json.
	AccessLog string
	// AccessLogFile: access-log-file, where the access log goes. Default
	// stderr.
	AccessLogFile string

	// Admin: admin, host:port of the admin API (/metrics, /status,
	// /healthz, /readyz); loopback only unless AdminAllowRemote. Default
	// none: off.
	Admin string
	// AdminAllowRemote: admin-allow-remote, allow an admin address that is
	// not loopback (the admin API has no authentication). Default false.
	AdminAllowRemote bool
	// AdminPprof: admin-pprof, serve Go's profiler (net/http/pprof) under
	// /debug/pprof/ on the admin listener. Default false.
	AdminPprof bool
	// ReleaseChecks: release-checks, check every release in the background
	// when it is first seen: files with a future mtime, the front
	// controller and index, PHP files php-user cannot read. Default true.
	ReleaseChecks bool
	// PHPUser: php-user, php-fpm's pool user (a name or a uid), for the
	// check of PHP files it cannot read. Default none: not checked.
	PHPUser string
	// Warm: warm, URL paths (with an optional query) requested from a new
	// release through php-fpm before it gets traffic. Default none: no
	// warm-up.
	Warm []string
	// WarmTimeout: warm-timeout, bound on one release's whole warm-up.
	// Default 10s.
	WarmTimeout time.Duration
	// WarmFailure: warm-failure, what a failed warm-up does: keep (users
	// stay on the previous release) or switch (anyway). Default keep.
	WarmFailure string
	// OnDrain: on-drain, a shell command run once per release that drained
	// (its last request done after a switch). Default none: off.
	OnDrain string
	// OnDrainTimeout: on-drain-timeout, bound on one run of on-drain; then
	// it is killed. Default 30s.
	OnDrainTimeout time.Duration

	// ManagedPool: managed-pool, a php-fpm pool configuration template;
	// set, realroot runs php-fpm itself, one master per release (see
	// docs/managed-pools.md), and fastcgi is not used. Default none: off.
	ManagedPool string
	// PHPFPM: php-fpm, the php-fpm binary of managed pools, a path or a
	// name looked up on PATH, then in /usr/sbin. Default php-fpm8.2.
	PHPFPM string
	// MaxPools: max-pools, managed pools alive at once, at least 2.
	// Default 2.
	MaxPools int
	// PoolStartTimeout: pool-start-timeout, bound on a managed pool's
	// start until it answers, and on the wait for room for it. Default 10s.
	PoolStartTimeout time.Duration
	// PoolStopTimeout: pool-stop-timeout, how long a managed pool has to
	// stop after SIGQUIT before its processes get SIGTERM, then SIGKILL.
	// Default 10s.
	PoolStopTimeout time.Duration
	// PoolDrainTimeout: pool-drain-timeout, how long a previous release's
	// managed pool is kept for its requests in flight before it is stopped
	// anyway. Default 5m.
	PoolDrainTimeout time.Duration
}

// CacheRule is one cache-control rule: static files whose URL path matches
// Match get Cache-Control: Value.
type CacheRule struct {
	// Match is ".ext" (an extension, any case), "/prefix" (a URL path
	// prefix, matching itself and everything below it) or "*" (every
	// static file).
	Match string
	// Value is the header's value, e.g. "public, max-age=31536000, immutable".
	Value string
}

// String is the rule as written: MATCH=VALUE.
func (r CacheRule) String() string { return r.Match + "=" + r.Value }

// HeaderRule is one header rule: responses whose URL path matches Match
// (like CacheRule's) get the header Name: Value.
type HeaderRule struct {
	Match, Name, Value string
}

// String is the rule as written: MATCH=NAME: VALUE.
func (r HeaderRule) String() string { return r.Match + "=" + r.Name + ": " + r.Value }

// Default returns the defaults.
func Default() Config {
	return Config{
		Listen:          []string{"127.0.0.1:8080"},
		FastCGI:         []string{"unix:/run/php/php8.2-fpm.sock"},
		Index:           []string{"index.php", "index.html"},
		FrontController: "/index.php",
		PHPExtensions:   []string{".php"},
		MaxBodySize:     1 << 20,
		Compress:        true,
		CompressMinSize: 1 << 10,
		BodyTimeout:     60 * time.Second,
		MaxURILength:    8 << 10,
		DialTimeout:     5 * time.Second,
		ReadTimeout:     60 * time.Second,
		WriteTimeout:    60 * time.Second,
		HeaderTimeout:   60 * time.Second,
		IdleTimeout:     75 * time.Second,
		SendTimeout:     60 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		MaxConns:        8,
		ConnIdleTimeout: 5 * time.Second,
		QueueTimeout:    10 * time.Second,
		MaxQueue:        1024,
		KeepAlive:       true,
		PollInterval:    time.Second,
		LogLevel:        "info",
		AccessLog:       "json",
		HTTP1Server:     "lean",
		ReleaseChecks:   true,
		WarmTimeout:     10 * time.Second,
		WarmFailure:     "keep",
		OnDrainTimeout:  30 * time.Second,

		UpstreamFailTimeout: 10 * time.Second,

		PHPFPM:           "php-fpm8.2",
		MaxPools:         2,
		PoolStartTimeout: 10 * time.Second,
		PoolStopTimeout:  10 * time.Second,
		PoolDrainTimeout: 5 * time.Minute,
	}
}

// FrontControllerScript is the front controller, or "" when it is off.
func (c *Config) FrontControllerScript() string {
	if c.FrontController == "off" {
		return ""
	}
	return c.FrontController
}

// Changed returns the names of the settings whose values differ between a
// and b, sorted by name.
func Changed(a, b Config) []string {
	fa, fb := FlagSet(&a), FlagSet(&b)
	var names []string
	fa.VisitAll(func(f *flag.Flag) {
		if f.Value.String() != fb.Lookup(f.Name).Value.String() {
			names = append(names, f.Name)
		}
	})
	return names
}
