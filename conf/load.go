package conf

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// EnvPrefix starts every environment variable of a setting.
const EnvPrefix = "REALROOT_"

// Load returns the configuration from the defaults, then the environment
// (getenv, e.g. os.Getenv), then the flags in args. It returns the arguments
// left after the flags. It does not validate.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, []string, error) {
	c := Default()
	env := FlagSet(&c)
	var errs []string
	env.VisitAll(func(f *flag.Flag) {
		name := EnvName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if lv, ok := f.Value.(listFlag); ok {
			for _, item := range strings.Split(v, ",") {
				if err := lv.Set(strings.TrimSpace(item)); err != nil {
					errs = append(errs, fmt.Sprintf("%s: %v", name, err))
				}
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
		}
	})
	if len(errs) > 0 {
		return c, nil, fmt.Errorf("environment: %s", strings.Join(errs, "; "))
	}
	fs := FlagSet(&c)
	fs.SetOutput(usage)
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	return c, fs.Args(), nil
}

// EnvName is the environment variable of a flag: listen -> REALROOT_LISTEN.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FlagSet returns the flags of every setting, bound to c.
func FlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("realroot", flag.ContinueOnError)
	fs.Var(&list{p: &c.Listen}, "listen", "address to serve HTTP on, host:port (repeatable)")
	fs.StringVar(&c.Root, "root", c.Root, "docroot; any component may be a symlink, e.g. /srv/app/current/public")
	fs.StringVar(&c.FastCGI, "fastcgi", c.FastCGI, "php-fpm address, unix:/path or host:port")
	fs.StringVar(&c.ServerName, "server-name", c.ServerName, "SERVER_NAME for PHP (default: the request's Host)")
	fs.Var(&list{p: &c.Index}, "index", "index file tried for a directory (repeatable)")
	fs.StringVar(&c.FrontController, "front-controller", c.FrontController, "script for paths that name no file, or off")
	fs.Var(&list{p: &c.PHPExtensions}, "php-ext", "extension of scripts sent to php-fpm (repeatable)")
	fs.Var(&c.MaxBodySize, "max-body-size", "largest request body, e.g. 32m (0 = no limit)")
	fs.Var(&params{p: &c.Params}, "param", "extra FastCGI param NAME=VALUE (repeatable)")
	fs.Var(&list{p: &c.Deny}, "deny", "URL path prefix answered 403 (repeatable)")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "timeout connecting to php-fpm")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "longest wait between two reads from php-fpm")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "longest wait between two writes to php-fpm")
	fs.DurationVar(&c.HeaderTimeout, "header-timeout", c.HeaderTimeout, "timeout reading a request's headers")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "idle client keep-alive connection timeout")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "time to finish in-flight requests on SIGTERM")
	fs.DurationVar(&c.PollInterval, "poll-interval", c.PollInterval, "re-read the root's symlinks this often (0 = off)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.AccessLog, "access-log", c.AccessLog, "access log format: json or off")
	return fs
}

// listFlag is a flag that repeats.
type listFlag interface {
	flag.Value
	isList()
}

// list is a repeatable string flag: its first Set in a FlagSet replaces the
// default (or the environment's value), later ones append.
type list struct {
	p   *[]string
	set bool
}

func (l *list) isList() {}

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

// params is the repeatable --param NAME=VALUE flag.
type params struct {
	p   *map[string]string
	set bool
}

func (m *params) isList() {}

func (m *params) String() string {
	if m.p == nil {
		return ""
	}
	var b []string
	for k, v := range *m.p {
		b = append(b, k+"="+v)
	}
	return strings.Join(b, ",")
}

func (m *params) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	if !m.set || *m.p == nil {
		*m.p, m.set = map[string]string{}, true
	}
	(*m.p)[k] = val
	return nil
}

// Size is a byte count written with an optional k, m or g suffix (powers of
// 1024), like nginx's sizes.
type Size int64

func (s *Size) String() string { return strconv.FormatInt(int64(*s), 10) }

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
