package conf

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment variable of a setting.
const EnvPrefix = "REALROOT_"

// EnvName is the environment variable of a flag: listen -> REALROOT_LISTEN.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagSet returns the flags of every setting, bound to c. Each flag's
// DefValue is c's value, so FlagSet(&Default()) documents the defaults. A
// word in backquotes in a usage is the flag's value name (flag.UnquoteUsage).
func FlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("realroot", flag.ContinueOnError)
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, usage) }
	dur := func(p *time.Duration, name, usage string) { fs.Var((*duration)(p), name, usage) }
	num := func(p *int, name, usage string) { fs.Var((*integer)(p), name, usage) }

	str(&c.File, "config", "read settings from the TOML `FILE` first (keys named like the flags)")
	fs.Var(&list{p: &c.Listen}, "listen", "`ADDR` (host:port) to serve HTTP on; repeatable")
	fs.Var(&list{p: &c.TLSCert}, "tls-cert", "certificate `FILE` (PEM: leaf, then chain); with it the listen addresses speak HTTPS and HTTP/2; repeatable, the n-th with the n-th tls-key, chosen by SNI, the first by default; re-read on reload (default: plain HTTP)")
	fs.Var(&list{p: &c.TLSKey}, "tls-key", "private key `FILE` (PEM) of the tls-cert in the same position; repeatable")
	str(&c.HTTPSRedirect, "https-redirect", "plain-HTTP `ADDR`, host:port, answering 301 to https://host/path on the first listen address's port; needs tls-cert (default: off)")
	str(&c.HTTP1Server, "http1-server", "what serves HTTP/1.x on plain listen addresses: lean (realroot's own loop, faster) or net/http (Go's server, for a difference listed in docs/reliability.md); TLS and h2c listeners always use net/http")
	fs.Var((*boolean)(&c.H2C), "h2c", "also serve HTTP/2 without TLS (prior knowledge) on the listen addresses, behind a load balancer that speaks it; not with tls-cert")
	fs.Var((*boolean)(&c.ProxyProtocol), "proxy-protocol", "read a PROXY protocol v1 or v2 header on each connection to the listen addresses: required from a trusted-proxy, refused (connection closed) from any other peer")
	fs.Var(&list{p: &c.TrustedProxies}, "trusted-proxy", "load balancer `CIDR` or address believed about the client: its PROXY header (with proxy-protocol), X-Forwarded-For and X-Forwarded-Proto; repeatable (default: none)")
	str(&c.Root, "root", "the docroot, `DIR`; any component may be a symlink, e.g. /srv/app/current/public (required)")
	fs.Var(&list{p: &c.FastCGI}, "fastcgi", "php-fpm's `ADDR`, unix:/path or host:port; repeatable: each request goes to the one with the fewest in flight, see docs/upstreams.md")
	str(&c.PingPath, "ping-path", "php-fpm's ping.path, `PATH`, asked by realroot check, /readyz and upstream-health-interval (default: a request for a missing script)")
	str(&c.ServerName, "server-name", "SERVER_NAME for PHP, `NAME` (default: the request's Host without port)")
	fs.Var(&list{p: &c.Index}, "index", "index `FILE` tried for a directory; repeatable")
	str(&c.FrontController, "front-controller", "`SCRIPT` for paths that name no file (try_files' last argument), or off")
	fs.Var(&list{p: &c.PHPExtensions}, "php-ext", "`EXT`ension of the scripts sent to php-fpm; repeatable")
	fs.Var(&c.MaxBodySize, "max-body-size", "largest request body, `SIZE` with k, m or g (0 = no limit; nginx's client_max_body_size)")
	fs.Var(&params{p: &c.Params}, "param", "extra FastCGI param `NAME=VALUE`, sent last; repeatable")
	fs.Var(&list{p: &c.Deny}, "deny", "URL path `PREFIX` answered 403, with everything below it; repeatable")
	fs.Var(&headerRules{p: &c.Headers}, "header", "add a response header, `PATTERN=NAME: VALUE`; PATTERN is .ext, /prefix or *; PHP's own header wins; repeatable")
	fs.Var((*boolean)(&c.Compress), "compress", "gzip or brotli for clients that accept them, on compressible types (never streams)")
	fs.Var(&c.CompressMinSize, "compress-min-size", "smallest body compressed, a `SIZE`")
	fs.Var(&params{p: &c.InternalLocations}, "internal-location", "serve an X-Accel-Redirect to a path under `PREFIX=DIR` from DIR (nginx's internal location); repeatable")
	fs.Var(&list{p: &c.SendfileDirs}, "sendfile-dir", "`DIR` X-Sendfile may name files in; repeatable (default: none, X-Sendfile ignored)")
	fs.Var(&cacheRules{p: &c.CacheControl}, "cache-control", "Cache-Control of static files, `PATTERN=VALUE`; PATTERN is .ext, /prefix or *; first match wins; repeatable")
	dur(&c.BodyTimeout, "body-timeout", "longest wait between two reads of a request body, a `DURATION`; then 408 (client_body_timeout)")
	fs.Var(&c.MaxURILength, "max-uri-length", "longest request target (path and query), a `SIZE` up to 64k; longer gets 414 (large_client_header_buffers)")
	fs.Var((*boolean)(&c.BufferResponses), "buffer-responses", "read each php-fpm response whole before sending it, so that slow clients hold no php-fpm worker (fastcgi_buffering); event streams and X-Accel-Buffering: no always stream")
	dur(&c.DialTimeout, "dial-timeout", "timeout connecting to php-fpm, a `DURATION`")
	dur(&c.ReadTimeout, "read-timeout", "longest wait between two reads from php-fpm, a `DURATION` (fastcgi_read_timeout)")
	dur(&c.WriteTimeout, "write-timeout", "longest wait between two writes to php-fpm, a `DURATION` (fastcgi_send_timeout)")
	dur(&c.HeaderTimeout, "header-timeout", "timeout reading a request's headers, a `DURATION` (client_header_timeout)")
	dur(&c.IdleTimeout, "idle-timeout", "how long an idle client connection is kept, a `DURATION` (keepalive_timeout)")
	dur(&c.SendTimeout, "send-timeout", "longest wait for a client to take the next bytes of a response, a `DURATION`; then the connection is closed, or the HTTP/2 stream reset (send_timeout)")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "time to finish in-flight requests on SIGTERM, a `DURATION`")
	num(&c.MaxConns, "max-conns", "php-fpm connections per address at most, `N`; set it to php-fpm's pm.max_children")
	dur(&c.ConnIdleTimeout, "conn-idle-timeout", "how long an idle php-fpm connection is kept open, a `DURATION`")
	dur(&c.QueueTimeout, "queue-timeout", "how long a request waits for a php-fpm connection, a `DURATION` (then 503)")
	num(&c.MaxQueue, "max-queue", "requests waiting for a php-fpm connection at most, `N` (more get 503 at once)")
	fs.Var((*boolean)(&c.KeepAlive), "keepalive", "reuse php-fpm connections (FCGI_KEEP_CONN); each open one holds a php-fpm worker")
	dur(&c.UpstreamFailTimeout, "upstream-fail-timeout", "with several fastcgi addresses, how long one is skipped after a request or health check could not connect or timed out, a `DURATION` (nginx's fail_timeout, max_fails=1)")
	dur(&c.UpstreamHealthInterval, "upstream-health-interval", "with several fastcgi addresses, ask each a FastCGI request (ping-path, else a missing script) every `DURATION` to mark it down or up (0 = off)")
	dur(&c.PollInterval, "poll-interval", "re-read the root's symlinks and stat its directory every `DURATION`, for NFS or overlay mounts (0 = off)")
	str(&c.LogLevel, "log-level", "`LEVEL`: debug, info, warn or error")
	str(&c.LogFile, "log-file", "write the log to `FILE`, reopened on SIGUSR1 (default: stderr)")
	str(&c.AccessLog, "access-log", "access log `FORMAT`: json, combined, ltsv or off")
	str(&c.AccessLogFile, "access-log-file", "write the access log to `FILE`, reopened on SIGUSR1 (default: stderr)")
	str(&c.Admin, "admin", "serve the admin API (/metrics, /status, /healthz, /readyz) on `ADDR`, host:port, loopback only (default: off)")
	fs.Var((*boolean)(&c.AdminAllowRemote), "admin-allow-remote", "allow an admin address that is not loopback; the admin API has no authentication: firewall it")
	fs.Var((*boolean)(&c.AdminPprof), "admin-pprof", "serve Go's profiler under /debug/pprof/ on the admin listener, e.g. go tool pprof http://ADMIN/debug/pprof/profile?seconds=10")
	fs.Var((*boolean)(&c.ReleaseChecks), "release-checks", "check each new release in the background: future mtimes, front controller and index, PHP files php-user cannot read")
	str(&c.PHPUser, "php-user", "php-fpm's pool `USER`, a name or a uid, for the check of PHP files it cannot read (default: not checked)")
	fs.Var(&list{p: &c.Warm}, "warm", "URL `PATH` requested from a new release through php-fpm before it gets traffic; repeatable (default: no warm-up)")
	dur(&c.WarmTimeout, "warm-timeout", "bound on one release's whole warm-up, a `DURATION`")
	str(&c.WarmFailure, "warm-failure", "`ACTION` on a failed warm-up: keep (the previous release) or switch (anyway)")
	str(&c.OnDrain, "on-drain", "shell `COMMAND` run once per drained release, with REALROOT_RELEASE, REALROOT_RELEASE_ROOT and REALROOT_GEN set (default: off)")
	dur(&c.OnDrainTimeout, "on-drain-timeout", "bound on one on-drain run, a `DURATION`; then it is killed")
	str(&c.ManagedPool, "managed-pool", "run php-fpm itself, one master per release, from the pool config template `FILE` ({{socket}}, {{release}}, {{root}}, {{name}}); not with fastcgi (default: off)")
	str(&c.PHPFPM, "php-fpm", "php-fpm `BIN`ary of managed pools: a path, or a name looked up on PATH, then in /usr/sbin")
	num(&c.MaxPools, "max-pools", "managed pools alive at once, `N` (at least 2): a new release waits for room, see docs/managed-pools.md")
	dur(&c.PoolStartTimeout, "pool-start-timeout", "bound on a managed pool's start until it answers, and on its wait for room, a `DURATION`")
	dur(&c.PoolStopTimeout, "pool-stop-timeout", "how long a managed pool has after SIGQUIT before SIGTERM, then SIGKILL, a `DURATION`")
	dur(&c.PoolDrainTimeout, "pool-drain-timeout", "how long a previous release's managed pool waits for its requests before it is stopped anyway, a `DURATION`")
	return fs
}

// listFlag is a flag that repeats. sep separates its items in an
// environment variable; reset empties it (an empty array in the file).
type listFlag interface {
	flag.Value
	sep() string
	reset()
}

// list is a repeatable string flag: its first Set in a FlagSet replaces the
// value from a lower layer (default, file, environment), later ones append.
type list struct {
	p   *[]string
	set bool
}

var _ listFlag = (*list)(nil)

func (l *list) sep() string { return "," }
func (l *list) reset()      { *l.p, l.set = []string{}, true }

func (l *list) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *list) Set(v string) error {
	if !l.set {
		*l.p, l.set = nil, true
	}
	*l.p = append(*l.p, v)
	return nil
}

// params is the repeatable --param NAME=VALUE flag. Its first Set replaces
// the lower layer's map.
type params struct {
	p   *map[string]string
	set bool
}

func (m *params) sep() string { return "\n" }
func (m *params) reset()      { *m.p, m.set = map[string]string{}, true }

func (m *params) String() string {
	if m.p == nil {
		return ""
	}
	var b []string
	for _, k := range slices.Sorted(maps.Keys(*m.p)) {
		b = append(b, k+"="+(*m.p)[k])
	}
	return strings.Join(b, ",")
}

func (m *params) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	if !m.set {
		*m.p, m.set = map[string]string{}, true
	}
	(*m.p)[k] = val
	return nil
}

// cacheRules is the repeatable --cache-control PATTERN=VALUE flag.
type cacheRules struct {
	p   *[]CacheRule
	set bool
}

func (c *cacheRules) sep() string { return "\n" }
func (c *cacheRules) reset()      { *c.p, c.set = []CacheRule{}, true }

func (c *cacheRules) String() string {
	if c.p == nil {
		return ""
	}
	var b []string
	for _, r := range *c.p {
		b = append(b, r.String())
	}
	return strings.Join(b, ",")
}

func (c *cacheRules) Set(v string) error {
	m, val, ok := strings.Cut(v, "=")
	if !ok || m == "" {
		return fmt.Errorf("%q is not PATTERN=VALUE", v)
	}
	if !c.set {
		*c.p, c.set = nil, true
	}
	*c.p = append(*c.p, CacheRule{Match: strings.TrimSpace(m), Value: strings.TrimSpace(val)})
	return nil
}

// headerRules is the repeatable --header PATTERN=NAME: VALUE flag.
type headerRules struct {
	p   *[]HeaderRule
	set bool
}

func (h *headerRules) sep() string { return "\n" }
func (h *headerRules) reset()      { *h.p, h.set = []HeaderRule{}, true }

func (h *headerRules) String() string {
	if h.p == nil {
		return ""
	}
	var b []string
	for _, r := range *h.p {
		b = append(b, r.String())
	}
	return strings.Join(b, ",")
}

func (h *headerRules) Set(v string) error {
	m, nv, ok := strings.Cut(v, "=")
	name, val, ok2 := strings.Cut(nv, ":")
	if !ok || !ok2 || m == "" {
		return fmt.Errorf("%q is not PATTERN=NAME: VALUE", v)
	}
	if !h.set {
		*h.p, h.set = nil, true
	}
	*h.p = append(*h.p, HeaderRule{Match: strings.TrimSpace(m), Name: strings.TrimSpace(name), Value: strings.TrimSpace(val)})
	return nil
}

// duration is a time.Duration flag that prints itself without zero units
// (60s is "1m", not "1m0s").
type duration time.Duration

func (d *duration) String() string {
	s := time.Duration(*d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func (d *duration) Set(v string) error {
	p, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration like 5s, 1m30s or 250ms", v)
	}
	*d = duration(p)
	return nil
}

// boolean is a bool flag: --keepalive, --keepalive=false.
type boolean bool

func (b *boolean) IsBoolFlag() bool { return true }
func (b *boolean) String() string   { return strconv.FormatBool(bool(*b)) }

func (b *boolean) Set(v string) error {
	p, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*b = boolean(p)
	return nil
}

// integer is an int flag.
type integer int

func (n *integer) String() string { return strconv.Itoa(int(*n)) }

func (n *integer) Set(v string) error {
	p, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	*n = integer(p)
	return nil
}

// Size is a byte count written with an optional k, m or g suffix (powers of
// 1024), like nginx's sizes.
type Size int64

// String prints s with the largest exact suffix: 1048576 is "1m".
func (s *Size) String() string {
	n := int64(*s)
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "g"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "m"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}

// Set parses "32m", "512k", "1g" or a plain number of bytes.
func (s *Size) Set(v string) error {
	mult := int64(1)
	num := strings.ToLower(strings.TrimSpace(v))
	switch {
	case strings.HasSuffix(num, "k"):
		mult, num = 1<<10, num[:len(num)-1]
	case strings.HasSuffix(num, "m"):
		mult, num = 1<<20, num[:len(num)-1]
	case strings.HasSuffix(num, "g"):
		mult, num = 1<<30, num[:len(num)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size like 32m, 512k or 1048576", v)
	}
	*s = Size(n * mult)
	return nil
}
