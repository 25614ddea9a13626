package conf

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate reports every problem at once, each naming the setting, the rule
// and the value given.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, a...)...))
	}
	if len(c.Listen) == 0 {
		bad("listen", "at least one address is required")
	}
	for _, l := range c.Listen {
		_, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			bad("listen", "%q is not host:port", l)
		}
	}
	c.validateTLS(bad)
	if c.HTTP1Server != "lean" && c.HTTP1Server != "net/http" {
		bad("http1-server", "%q is not lean or net/http", c.HTTP1Server)
	}
	if c.Root == "" {
		bad("root", "required: the docroot, e.g. --root /srv/app/current/public")
	} else if !filepath.IsAbs(c.Root) {
		bad("root", "%q is not an absolute path", c.Root)
	}
	switch {
	case c.ManagedPool != "" && !slices.Equal(c.FastCGI, Default().FastCGI):
		bad("fastcgi", "%q cannot be set with managed-pool: realroot then runs php-fpm itself, on sockets of its own", c.FastCGI)
	case len(c.FastCGI) == 0:
		bad("fastcgi", "at least one address is required")
	}
	seen := map[string]bool{}
	for _, a := range c.FastCGI {
		network, address, err := ParseFastCGI(a)
		if err != nil {
			bad("fastcgi", "%v", err)
			continue
		}
		key := network + ":" + strings.ToLower(address)
		if network == "unix" {
			key = network + ":" + filepath.Clean(address)
		}
		if seen[key] {
			bad("fastcgi", "%q is given twice: max-conns applies per address, so one php-fpm would get twice its connections", a)
		}
		seen[key] = true
	}
	if c.PingPath != "" && !strings.HasPrefix(c.PingPath, "/") {
		bad("ping-path", "%q does not start with /", c.PingPath)
	}
	for _, i := range c.Index {
		if i == "" || strings.Contains(i, "/") {
			bad("index", "%q is not a file name", i)
		}
	}
	if fc := c.FrontController; fc != "" && fc != "off" && !strings.HasPrefix(fc, "/") {
		bad("front-controller", "%q does not start with / (or is not off)", fc)
	}
	if len(c.PHPExtensions) == 0 {
		bad("php-ext", "at least one extension is required")
	}
	for _, e := range c.PHPExtensions {
		if len(e) < 2 || e[0] != '.' || strings.ContainsAny(e[1:], "./") {
			bad("php-ext", "%q is not an extension like .php", e)
		}
	}
	if c.MaxBodySize < 0 {
		bad("max-body-size", "%d is negative (0 means no limit)", c.MaxBodySize)
	}
	for _, d := range c.Deny {
		if !strings.HasPrefix(d, "/") {
			bad("deny", "%q does not start with /", d)
		}
	}
	for k := range c.Params {
		if k == "" || strings.ContainsAny(k, "= \t\r\n") {
			bad("param", "%q is not a param name", k)
		}
	}
	for _, r := range c.Headers {
		if !validMatch(r.Match) {
			bad("header", "%q does not match .ext, /prefix or *", r.String())
		}
		if r.Name == "" || strings.ContainsFunc(r.Name, func(c rune) bool { return c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) }) {
			bad("header", "%q has no header name, or one that is not a token", r.String())
		}
		if strings.ContainsFunc(r.Value, isCtl) {
			bad("header", "%q has control characters in its value", r.String())
		}
	}
	if c.CompressMinSize < 0 {
		bad("compress-min-size", "%s is negative", c.CompressMinSize.String())
	}
	for prefix, dir := range c.InternalLocations {
		if !strings.HasPrefix(prefix, "/") {
			bad("internal-location", "%q does not start with /", prefix+"="+dir)
		}
		if !filepath.IsAbs(dir) {
			bad("internal-location", "%q: %q is not an absolute directory", prefix+"="+dir, dir)
		}
	}
	for _, d := range c.SendfileDirs {
		if !filepath.IsAbs(d) {
			bad("sendfile-dir", "%q is not an absolute directory", d)
		}
	}
	for _, r := range c.CacheControl {
		m := r.Match
		if !validMatch(m) {
			bad("cache-control", "%q does not match .ext, /prefix or *", r.String())
		}
		if strings.TrimSpace(r.Value) == "" || strings.ContainsFunc(r.Value, isCtl) {
			bad("cache-control", "%q has no header value, or one with control characters", r.String())
		}
	}
	if c.MaxURILength < 1 || c.MaxURILength > maxURILength {
		bad("max-uri-length", "%s is not between 1 and 64k (the HTTP server's limit on a request's headers)", c.MaxURILength.String())
	}
	for _, t := range []struct {
		key string
		d   time.Duration
		min time.Duration
	}{
		{"body-timeout", c.BodyTimeout, time.Millisecond},
		{"dial-timeout", c.DialTimeout, time.Millisecond},
		{"read-timeout", c.ReadTimeout, time.Millisecond},
		{"write-timeout", c.WriteTimeout, time.Millisecond},
		{"header-timeout", c.HeaderTimeout, time.Millisecond},
		{"idle-timeout", c.IdleTimeout, time.Millisecond},
		{"send-timeout", c.SendTimeout, time.Millisecond},
		{"shutdown-timeout", c.ShutdownTimeout, 0},
		{"conn-idle-timeout", c.ConnIdleTimeout, time.Millisecond},
		{"queue-timeout", c.QueueTimeout, time.Millisecond},
		{"upstream-fail-timeout", c.UpstreamFailTimeout, time.Millisecond},
		{"upstream-health-interval", c.UpstreamHealthInterval, 0},
		{"poll-interval", c.PollInterval, 0},
		{"warm-timeout", c.WarmTimeout, time.Millisecond},
		{"on-drain-timeout", c.OnDrainTimeout, time.Millisecond},
	} {
		if t.d < t.min {
			bad(t.key, "%v is below %v", t.d, t.min)
		}
	}
	if c.PollInterval > 0 && c.PollInterval < minPollInterval {
		bad("poll-interval", "%v is below %v (0 turns it off)", c.PollInterval, minPollInterval)
	}
	if c.UpstreamHealthInterval > 0 && c.UpstreamHealthInterval < minHealthInterval {
		bad("upstream-health-interval", "%v is below %v (0 turns it off)", c.UpstreamHealthInterval, minHealthInterval)
	}
	if c.MaxConns < 1 {
		bad("max-conns", "%d is below 1", c.MaxConns)
	}
	if c.MaxQueue < 1 {
		bad("max-queue", "%d is below 1", c.MaxQueue)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.AccessLog {
	case "json", "combined", "ltsv", "off":
	default:
		bad("access-log", "%q is not json, combined, ltsv or off", c.AccessLog)
	}
	for _, f := range []struct{ key, path string }{{"log-file", c.LogFile}, {"access-log-file", c.AccessLogFile}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			bad(f.key, "%q is not an absolute path (empty means stderr)", f.path)
		}
	}
	if c.Admin != "" {
		_, port, err := net.SplitHostPort(c.Admin)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			bad("admin", "%q is not host:port", c.Admin)
		}
	}
	for _, w := range c.Warm {
		switch {
		case !strings.HasPrefix(w, "/"):
			bad("warm", "%q does not start with /", w)
		case strings.ContainsFunc(w, isCtl):
			bad("warm", "%q has control characters", w)
		}
	}
	switch c.WarmFailure {
	case "keep", "switch":
	default:
		bad("warm-failure", "%q is not keep or switch", c.WarmFailure)
	}
	if c.ManagedPool != "" {
		if !filepath.IsAbs(c.ManagedPool) {
			bad("managed-pool", "%q is not an absolute path", c.ManagedPool)
		}
		if c.PHPFPM == "" {
			bad("php-fpm", "a binary is required with managed-pool, e.g. php-fpm8.2")
		}
		if c.MaxPools < 2 {
			bad("max-pools", "%d is below 2 (a new release's pool starts while the current one serves)", c.MaxPools)
		}
		for _, t := range []struct {
			key string
			d   time.Duration
		}{{"pool-start-timeout", c.PoolStartTimeout}, {"pool-stop-timeout", c.PoolStopTimeout}, {"pool-drain-timeout", c.PoolDrainTimeout}} {
			if t.d < time.Millisecond {
				bad(t.key, "%v is below 1ms", t.d)
			}
		}
	}
	return errors.Join(errs...)
}

// minHealthInterval bounds upstream-health-interval from below, so that
// health checks cannot take a share of php-fpm's workers.
const minHealthInterval = 100 * time.Millisecond

// minPollInterval bounds poll-interval from below (a typo of 1s as 1us
// would make the watcher spin: each tick is a readlink per link and a stat).
const minPollInterval = 10 * time.Millisecond

// maxURILength bounds max-uri-length: the request line counts in the HTTP
// server's limit on a request's headers (cmd's http.Server.MaxHeaderBytes).
const maxURILength = 64 << 10

func isCtl(r rune) bool { return r < ' ' || r == 0x7f }

// validMatch reports whether m is .ext, /prefix or *.
func validMatch(m string) bool {
	return m == "*" || (len(m) >= 2 && (m[0] == '/' || (m[0] == '.' && !strings.ContainsAny(m[1:], "./"))))
}

// ParseFastCGI splits a fastcgi address, unix:/path or host:port, into a
// network and an address for net.Dial.
func ParseFastCGI(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(p) {
			return "", "", fmt.Errorf("%q is not unix:/absolute/path", addr)
		}
		return "unix", p, nil
	}
	_, port, err := net.SplitHostPort(addr)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q is not unix:/path or host:port", addr)
	}
	return "tcp", addr, nil
}
