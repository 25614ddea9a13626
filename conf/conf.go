// Package conf is realroot's configuration: one struct, its defaults,
// loading from the environment (REALROOT_*) and flags, and Validate.
//
// Precedence, lowest first: defaults, environment, flags. Every flag
// --some-name has the environment variable REALROOT_SOME_NAME; list flags
// repeat (--deny /a --deny /b) and their variables are comma-separated.
package conf

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of realroot. The comment of each field gives its
// flag and its default.
type Config struct {
	// Listen: --listen, addresses to serve HTTP on. Default 127.0.0.1:8080.
	Listen []string
	// Root: --root, the docroot; any component may be a symlink
	// (/srv/app/current/public). Required.
	Root string
	// FastCGI: --fastcgi, php-fpm's address, unix:/path or host:port.
	// Default unix:/run/php/php8.2-fpm.sock (Debian's).
	FastCGI string
	// ServerName: --server-name, SERVER_NAME for PHP. Default: the request's
	// Host without port.
	ServerName string
	// Index: --index, files tried for a directory. Default index.php,index.html.
	Index []string
	// FrontController: --front-controller, the script for paths naming no
	// file (try_files' last argument). Default /index.php; "off" disables it.
	FrontController string
	// PHPExtensions: --php-ext, extensions sent to php-fpm. Default .php.
	PHPExtensions []string
	// MaxBodySize: --max-body-size, largest request body (k, m, g suffixes;
	// 0 = no limit). Default 1m, like nginx's client_max_body_size.
	MaxBodySize Size
	// Params: --param NAME=VALUE, extra FastCGI params. Default none.
	Params map[string]string
	// Deny: --deny, URL path prefixes answered 403. Default none.
	Deny []string
	// DialTimeout: --dial-timeout, connecting to php-fpm. Default 5s.
	DialTimeout time.Duration
	// ReadTimeout: --read-timeout, longest wait between two reads from
	// php-fpm (nginx's fastcgi_read_timeout). Default 60s.
	ReadTimeout time.Duration
	// WriteTimeout: --write-timeout, longest wait between two writes to
	// php-fpm (fastcgi_send_timeout). Default 60s.
	WriteTimeout time.Duration
	// HeaderTimeout: --header-timeout, reading a request's headers
	// (client_header_timeout). Default 60s.
	HeaderTimeout time.Duration
	// IdleTimeout: --idle-timeout, an idle client keep-alive connection
	// (keepalive_timeout). Default 75s.
	IdleTimeout time.Duration
	// ShutdownTimeout: --shutdown-timeout, finishing in-flight requests on
	// SIGTERM. Default 30s.
	ShutdownTimeout time.Duration
	// PollInterval: --poll-interval, re-reading the root's symlinks for
	// filesystems without change events (0 = off). Default 1s.
	PollInterval time.Duration
	// LogLevel: --log-level, debug, info, warn or error. Default info.
	LogLevel string
	// AccessLog: --access-log, json or off. Default json.
	AccessLog string
}

// Default returns the defaults.
func Default() Config {
	return Config{
		Listen:          []string{"127.0.0.1:8080"},
		FastCGI:         "unix:/run/php/php8.2-fpm.sock",
		Index:           []string{"index.php", "index.html"},
		FrontController: "/index.php",
		PHPExtensions:   []string{".php"},
		MaxBodySize:     1 << 20,
		DialTimeout:     5 * time.Second,
		ReadTimeout:     60 * time.Second,
		WriteTimeout:    60 * time.Second,
		HeaderTimeout:   60 * time.Second,
		IdleTimeout:     75 * time.Second,
		ShutdownTimeout: 30 * time.Second,
		PollInterval:    time.Second,
		LogLevel:        "info",
		AccessLog:       "json",
	}
}

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
		if _, _, err := net.SplitHostPort(l); err != nil {
			bad("listen", "%q is not host:port", l)
		}
	}
	if c.Root == "" {
		bad("root", "required: the docroot, e.g. --root /srv/app/current/public")
	} else if !filepath.IsAbs(c.Root) {
		bad("root", "%q is not an absolute path", c.Root)
	}
	if _, _, err := c.FastCGIAddr(); err != nil {
		bad("fastcgi", "%v", err)
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
		if k == "" || strings.ContainsAny(k, "= \t") {
			bad("param", "%q is not a param name", k)
		}
	}
	for _, t := range []struct {
		key string
		d   time.Duration
		min time.Duration
	}{
		{"dial-timeout", c.DialTimeout, time.Millisecond},
		{"read-timeout", c.ReadTimeout, time.Millisecond},
		{"write-timeout", c.WriteTimeout, time.Millisecond},
		{"header-timeout", c.HeaderTimeout, time.Millisecond},
		{"idle-timeout", c.IdleTimeout, time.Millisecond},
		{"shutdown-timeout", c.ShutdownTimeout, 0},
		{"poll-interval", c.PollInterval, 0},
	} {
		if t.d < t.min {
			bad(t.key, "%v is below %v", t.d, t.min)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q is not debug, info, warn or error", c.LogLevel)
	}
	switch c.AccessLog {
	case "json", "off":
	default:
		bad("access-log", "%q is not json or off", c.AccessLog)
	}
	return errors.Join(errs...)
}

// FastCGIAddr splits FastCGI into a network and address for net.Dial.
func (c *Config) FastCGIAddr() (network, address string, err error) {
	if p, ok := strings.CutPrefix(c.FastCGI, "unix:"); ok {
		if !filepath.IsAbs(p) {
			return "", "", fmt.Errorf("%q is not unix:/absolute/path", c.FastCGI)
		}
		return "unix", p, nil
	}
	_, port, err := net.SplitHostPort(c.FastCGI)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("%q is not unix:/path or host:port", c.FastCGI)
	}
	return "tcp", c.FastCGI, nil
}

// FrontControllerScript is the front controller, or "" when it is off.
func (c *Config) FrontControllerScript() string {
	if c.FrontController == "off" {
		return ""
	}
	return c.FrontController
}
