package conf

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeFile writes a config file into a temp dir and returns its path.
func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "realroot.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaults(t *testing.T) {
	c, rest, err := Load(nil, env(nil))
	if err != nil || len(rest) != 0 {
		t.Fatalf("Load() = %v, %q", err, rest)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load() without sources = %+v; want Default() %+v", c, Default())
	}
	d := Default()
	if got, want := strings.Join(d.FastCGI, ","), "unix:/run/php/php8.2-fpm.sock"; got != want {
		t.Errorf("default fastcgi = %q; want %q", got, want)
	}
	if d.MaxBodySize != 1<<20 || d.MaxConns != 8 || d.MaxQueue != 1024 || !d.KeepAlive ||
		d.ConnIdleTimeout != 5*time.Second || d.QueueTimeout != 10*time.Second {
		t.Errorf("defaults changed: %+v", d)
	}
	if d.BodyTimeout != 60*time.Second || d.MaxURILength != 8<<10 || d.BufferResponses {
		t.Errorf("request defaults changed: body-timeout %v, max-uri-length %v, buffer-responses %v; want 1m, 8k, false",
			d.BodyTimeout, d.MaxURILength, d.BufferResponses)
	}
	if d.Admin != "" || d.AdminAllowRemote || d.AdminPprof || !d.ReleaseChecks || d.PHPUser != "" || d.Warm != nil ||
		d.WarmTimeout != 10*time.Second || d.WarmFailure != "keep" || d.OnDrain != "" || d.OnDrainTimeout != 30*time.Second {
		t.Errorf("deploy defaults changed: %+v; want admin off, release-checks on, warm-timeout 10s, warm-failure keep, on-drain-timeout 30s", d)
	}
}

// TestKeys sets each setting added with the deploy features from the file,
// the environment and a flag, each alone over the defaults.
func TestKeys(t *testing.T) {
	tests := []struct {
		key  string
		file string // the TOML value
		env  string
		args []string
		want func(c *Config)
	}{
		{"admin", `"127.0.0.1:9180"`, "127.0.0.1:9180", []string{"--admin", "127.0.0.1:9180"},
			func(c *Config) { c.Admin = "127.0.0.1:9180" }},
		{"admin-allow-remote", `true`, "true", []string{"--admin-allow-remote"}, func(c *Config) { c.AdminAllowRemote = true }},
		{"admin-pprof", `true`, "true", []string{"--admin-pprof"}, func(c *Config) { c.AdminPprof = true }},
		{"http1-server", `"lean"`, "lean", []string{"--http1-server", "lean"}, func(c *Config) { c.HTTP1Server = "lean" }},
		{"release-checks", `false`, "false", []string{"--release-checks=false"}, func(c *Config) { c.ReleaseChecks = false }},
		{"php-user", `"www-data"`, "www-data", []string{"--php-user", "www-data"}, func(c *Config) { c.PHPUser = "www-data" }},
		{"warm", `["/", "/health.php?deep=1"]`, "/, /health.php?deep=1", []string{"--warm", "/", "--warm", "/health.php?deep=1"},
			func(c *Config) { c.Warm = []string{"/", "/health.php?deep=1"} }},
		{"warm-timeout", `"2s"`, "2s", []string{"--warm-timeout", "2s"}, func(c *Config) { c.WarmTimeout = 2 * time.Second }},
		{"warm-failure", `"switch"`, "switch", []string{"--warm-failure", "switch"}, func(c *Config) { c.WarmFailure = "switch" }},
		{"on-drain", `"echo drained"`, "echo drained", []string{"--on-drain", "echo drained"}, func(c *Config) { c.OnDrain = "echo drained" }},
		{"on-drain-timeout", `"1m"`, "1m", []string{"--on-drain-timeout", "1m"}, func(c *Config) { c.OnDrainTimeout = time.Minute }},
		{"body-timeout", `"15s"`, "15s", []string{"--body-timeout", "15s"}, func(c *Config) { c.BodyTimeout = 15 * time.Second }},
		{"buffer-responses", `true`, "true", []string{"--buffer-responses"}, func(c *Config) { c.BufferResponses = true }},
		{"max-uri-length", `"16k"`, "16k", []string{"--max-uri-length", "16k"}, func(c *Config) { c.MaxURILength = 16 << 10 }},
		{"max-uri-length", `4096`, "4096", []string{"--max-uri-length=4096"}, func(c *Config) { c.MaxURILength = 4096 }},
		{"compress", `false`, "false", []string{"--compress=false"}, func(c *Config) { c.Compress = false }},
		{"compress-min-size", `"4k"`, "4k", []string{"--compress-min-size", "4k"}, func(c *Config) { c.CompressMinSize = 4 << 10 }},
		{"header", `["*=X-Frame-Options: DENY", "/api=Cache-Control: no-store"]`, "*=X-Frame-Options: DENY\n/api=Cache-Control: no-store",
			[]string{"--header", "*=X-Frame-Options: DENY", "--header", "/api=Cache-Control: no-store"},
			func(c *Config) {
				c.Headers = []HeaderRule{{"*", "X-Frame-Options", "DENY"}, {"/api", "Cache-Control", "no-store"}}
			}},
		{"internal-location", `["/protected/=/srv/app/shared/files/"]`, "/protected/=/srv/app/shared/files/",
			[]string{"--internal-location", "/protected/=/srv/app/shared/files/"},
			func(c *Config) { c.InternalLocations = map[string]string{"/protected/": "/srv/app/shared/files/"} }},
		{"sendfile-dir", `["/srv/files", "/srv/more"]`, "/srv/files,/srv/more", []string{"--sendfile-dir", "/srv/files", "--sendfile-dir", "/srv/more"},
			func(c *Config) { c.SendfileDirs = []string{"/srv/files", "/srv/more"} }},
	}
	for _, tt := range tests {
		want := Default()
		tt.want(&want)
		check := func(source string, got Config, err error) {
			t.Helper()
			got.File = ""
			if err != nil {
				t.Errorf("%s from the %s: %v", tt.key, source, err)
			} else if !reflect.DeepEqual(got, want) {
				t.Errorf("%s from the %s: changed %v; want only %s", tt.key, source, Changed(Default(), got), tt.key)
			}
		}
		c, _, err := Load([]string{"--config", writeFile(t, tt.key+" = "+tt.file+"\n")}, env(nil))
		check("file", c, err)
		c, _, err = Load(nil, env(map[string]string{EnvName(tt.key): tt.env}))
		check("environment", c, err)
		c, _, err = Load(tt.args, env(nil))
		check("flags", c, err)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
root = "/file"
listen = ["127.0.0.1:1", "127.0.0.1:2"]
fastcgi = "127.0.0.1:9000"
deny = ["/file-deny"]
read-timeout = "90s"
max-body-size = "8m"
max-conns = 4
keepalive = false
log-level = "debug"

[param]
APP_ENV = "file"
FROM_FILE = 1
`)
	other := writeFile(t, `root = "/other"`)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(c *Config)
	}{
		{
			name: "file over defaults",
			args: []string{"--config", file},
			want: func(c *Config) {
				c.File = file
				c.Root = "/file"
				c.Listen = []string{"127.0.0.1:1", "127.0.0.1:2"}
				c.FastCGI = []string{"127.0.0.1:9000"}
				c.Deny = []string{"/file-deny"}
				c.ReadTimeout = 90 * time.Second
				c.MaxBodySize = 8 << 20
				c.MaxConns = 4
				c.KeepAlive = false
				c.LogLevel = "debug"
				c.Params = map[string]string{"APP_ENV": "file", "FROM_FILE": "1"}
			},
		},
		{
			name: "env over file",
			env: map[string]string{
				"REALROOT_CONFIG": file, "REALROOT_ROOT": "/env", "REALROOT_DENY": "/a, /b",
				"REALROOT_PARAM": "APP_ENV=env\nLIST=a,b", "REALROOT_KEEPALIVE": "true",
				"REALROOT_CACHE_CONTROL": ".css=public, max-age=60\n/build/=immutable",
			},
			want: func(c *Config) {
				c.File = file
				c.Root = "/env"
				c.Listen = []string{"127.0.0.1:1", "127.0.0.1:2"}
				c.FastCGI = []string{"127.0.0.1:9000"}
				c.Deny = []string{"/a", "/b"}
				c.ReadTimeout = 90 * time.Second
				c.MaxBodySize = 8 << 20
				c.MaxConns = 4
				c.LogLevel = "debug"
				c.Params = map[string]string{"APP_ENV": "env", "LIST": "a,b"}
				c.CacheControl = []CacheRule{{".css", "public, max-age=60"}, {"/build/", "immutable"}}
			},
		},
		{
			name: "flags over env",
			env:  map[string]string{"REALROOT_CONFIG": file, "REALROOT_ROOT": "/env", "REALROOT_DENY": "/a,/b"},
			args: []string{"--root", "/flag", "--deny", "/c", "--deny", "/d", "--param", "A=1", "--param", "B=x=y",
				"--keepalive", "--max-conns", "16", "--read-timeout", "2s"},
			want: func(c *Config) {
				c.File = file
				c.Root = "/flag"
				c.Listen = []string{"127.0.0.1:1", "127.0.0.1:2"}
				c.FastCGI = []string{"127.0.0.1:9000"}
				c.Deny = []string{"/c", "/d"}
				c.ReadTimeout = 2 * time.Second
				c.MaxBodySize = 8 << 20
				c.MaxConns = 16
				c.LogLevel = "debug"
				c.Params = map[string]string{"A": "1", "B": "x=y"}
			},
		},
		{
			name: "--config over REALROOT_CONFIG",
			env:  map[string]string{"REALROOT_CONFIG": file},
			args: []string{"--config", other},
			want: func(c *Config) { c.File = other; c.Root = "/other" },
		},
		{
			name: "arguments after --",
			args: []string{"--root", "/r", "--", "php-fpm8.2", "-F"},
			want: func(c *Config) { c.Root = "/r" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := Load(tt.args, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v\nchanged: %v", got, want, Changed(got, want))
			}
		})
	}
}

func TestLoadRest(t *testing.T) {
	_, rest, err := Load([]string{"--root", "/r", "--", "php-fpm8.2", "-F"}, env(nil))
	if err != nil || strings.Join(rest, " ") != "php-fpm8.2 -F" {
		t.Errorf("Load rest = %q, %v; want [php-fpm8.2 -F]", rest, err)
	}
}

func TestFileValues(t *testing.T) {
	p := writeFile(t, `
listen = "127.0.0.1:8081"           # a single value for a list
index = []                          # empty: no index files
cache-control = [".CSS=public, max-age=31536000", "*=no-cache"]
param.APP_ENV = "prod"
param.DEBUG = false
poll-interval = "0s"
`)
	c, _, err := Load([]string{"--config", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Listen, ","); got != "127.0.0.1:8081" {
		t.Errorf("listen = %q; want 127.0.0.1:8081", got)
	}
	if c.Index == nil || len(c.Index) != 0 {
		t.Errorf("index = %#v; want empty", c.Index)
	}
	if want := []CacheRule{{".CSS", "public, max-age=31536000"}, {"*", "no-cache"}}; !reflect.DeepEqual(c.CacheControl, want) {
		t.Errorf("cache-control = %v; want %v", c.CacheControl, want)
	}
	if want := map[string]string{"APP_ENV": "prod", "DEBUG": "false"}; !reflect.DeepEqual(c.Params, want) {
		t.Errorf("param = %v; want %v", c.Params, want)
	}
	if c.PollInterval != 0 {
		t.Errorf("poll-interval = %v; want 0", c.PollInterval)
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []string
	}{
		{
			name: "unknown keys",
			give: "root = \"/srv\"\n\nlisten_addr = \"x\"\nfastcgi = \"127.0.0.1:9000\"\n\n[logging]\nlevel = \"debug\"\n",
			want: []string{`:3: unknown key "listen_addr"`, `:6: unknown key "logging"`},
		},
		{
			name: "config in the file",
			give: "config = \"/etc/other.toml\"\n",
			want: []string{`:1: unknown key "config"`},
		},
		{
			name: "bad values",
			give: "root = \"/srv\"\nread-timeout = 90\nidle-timeout = 1979-05-27\nmax-body-size = \"12q\"\nkeepalive = \"yes\"\n" +
				"warm-timeout = 10\nadmin-allow-remote = \"yes\"\nmax-uri-length = \"8 kB\"\n",
			want: []string{
				`:2: read-timeout: "90" is not a duration like 5s`,
				`:3: idle-timeout: 1979-05-27 is a date or a time`,
				`:4: max-body-size: "12q" is not a size`,
				`:5: keepalive: "yes" is not true or false`,
				`:6: warm-timeout: "10" is not a duration like 5s`,
				`:7: admin-allow-remote: "yes" is not true or false`,
				`:8: max-uri-length: "8 kB" is not a size`,
			},
		},
		{
			name: "wrong shapes",
			give: "root = [\"/a\", \"/b\"]\ndeny = [[\"/a\"]]\n\n[listen]\nx = 1\n",
			want: []string{`:1: root: is an array; want one value`, `:2: deny: holds an array or a table`, `:4: listen: is a table`},
		},
		{
			name: "syntax",
			give: "root = \"/srv\"\nlisten = \n",
			want: []string{`:2:10: unexpected character`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.give)
			_, _, err := Load([]string{"--config", p}, env(nil))
			if err == nil {
				t.Fatalf("Load accepted %q", tt.give)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), "config "+p+w) {
					t.Errorf("error lacks %q; got:\n%v", "config "+p+w, err)
				}
			}
		})
	}
	if _, _, err := Load(nil, env(map[string]string{"REALROOT_CONFIG": "/nonexistent/realroot.toml"})); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v; want an error wrapping fs.ErrNotExist", err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "env duration", env: map[string]string{"REALROOT_READ_TIMEOUT": "soon"},
			want: `environment REALROOT_READ_TIMEOUT: "soon" is not a duration`},
		{name: "env int", env: map[string]string{"REALROOT_MAX_CONNS": "many"},
			want: `environment REALROOT_MAX_CONNS: "many" is not a whole number`},
		{name: "env param", env: map[string]string{"REALROOT_PARAM": "NOVALUE"},
			want: `environment REALROOT_PARAM: "NOVALUE" is not NAME=VALUE`},
		{name: "flag size", args: []string{"--max-body-size", "12q"}, want: "max-body-size"},
		{name: "flag cache-control", args: []string{"--cache-control", "public"}, want: `"public" is not PATTERN=VALUE`},
		{name: "unknown flag", args: []string{"--nope"}, want: "-nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(tt.args, env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load = %v; want an error containing %q", err, tt.want)
			}
		})
	}
	if _, _, err := Load([]string{"--help"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Load(--help) = %v; want flag.ErrHelp", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		give func(c *Config)
		want string
	}{
		{"no listen", func(c *Config) { c.Listen = nil }, `listen: at least one address is required`},
		{"listen", func(c *Config) { c.Listen = []string{"8080"} }, `listen: "8080" is not host:port`},
		{"listen port", func(c *Config) { c.Listen = []string{"127.0.0.1:http"} }, `listen: "127.0.0.1:http" is not host:port`},
		{"no root", func(c *Config) { c.Root = "" }, `root: required: the docroot, e.g. --root /srv/app/current/public`},
		{"root", func(c *Config) { c.Root = "relative/path" }, `root: "relative/path" is not an absolute path`},
		{"no fastcgi", func(c *Config) { c.FastCGI = nil }, `fastcgi: at least one address is required`},
		{"fastcgi", func(c *Config) { c.FastCGI = []string{"tcp:foo"} }, `fastcgi: "tcp:foo" is not unix:/path or host:port`},
		{"fastcgi unix", func(c *Config) { c.FastCGI = []string{"unix:php.sock"} }, `fastcgi: "unix:php.sock" is not unix:/absolute/path`},
		{"ping-path", func(c *Config) { c.PingPath = "ping" }, `ping-path: "ping" does not start with /`},
		{"index", func(c *Config) { c.Index = []string{"a/index.php"} }, `index: "a/index.php" is not a file name`},
		{"front-controller", func(c *Config) { c.FrontController = "index.php" }, `front-controller: "index.php" does not start with / (or is not off)`},
		{"no php-ext", func(c *Config) { c.PHPExtensions = nil }, `php-ext: at least one extension is required`},
		{"php-ext", func(c *Config) { c.PHPExtensions = []string{"php"} }, `php-ext: "php" is not an extension like .php`},
		{"max-body-size", func(c *Config) { c.MaxBodySize = -1 }, `max-body-size: -1 is negative (0 means no limit)`},
		{"deny", func(c *Config) { c.Deny = []string{"data"} }, `deny: "data" does not start with /`},
		{"param", func(c *Config) { c.Params = map[string]string{"A B": "1"} }, `param: "A B" is not a param name`},
		{"cache-control match", func(c *Config) { c.CacheControl = []CacheRule{{"css", "public"}} },
			`cache-control: "css=public" does not match .ext, /prefix or *`},
		{"cache-control value", func(c *Config) { c.CacheControl = []CacheRule{{".css", " "}} },
			`cache-control: ".css= " has no header value, or one with control characters`},
		{"header match", func(c *Config) { c.Headers = []HeaderRule{{"css", "X-A", "b"}} },
			`header: "css=X-A: b" does not match .ext, /prefix or *`},
		{"header name", func(c *Config) { c.Headers = []HeaderRule{{"*", "X A", "b"}} },
			`header: "*=X A: b" has no header name, or one that is not a token`},
		{"header value", func(c *Config) { c.Headers = []HeaderRule{{".js", "X-A", "b\nc"}} },
			`header: ".js=X-A: b\nc" has control characters in its value`},
		{"compress-min-size", func(c *Config) { c.CompressMinSize = -1 }, `compress-min-size: -1 is negative`},
		{"internal-location", func(c *Config) { c.InternalLocations = map[string]string{"/p/": "files"} },
			`internal-location: "/p/=files": "files" is not an absolute directory`},
		{"sendfile-dir", func(c *Config) { c.SendfileDirs = []string{"files"} }, `sendfile-dir: "files" is not an absolute directory`},
		{"dial-timeout", func(c *Config) { c.DialTimeout = 0 }, `dial-timeout: 0s is below 1ms`},
		{"read-timeout", func(c *Config) { c.ReadTimeout = 0 }, `read-timeout: 0s is below 1ms`},
		{"write-timeout", func(c *Config) { c.WriteTimeout = time.Microsecond }, `write-timeout: 1µs is below 1ms`},
		{"header-timeout", func(c *Config) { c.HeaderTimeout = 0 }, `header-timeout: 0s is below 1ms`},
		{"idle-timeout", func(c *Config) { c.IdleTimeout = 0 }, `idle-timeout: 0s is below 1ms`},
		{"shutdown-timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, `shutdown-timeout: -1s is below 0s`},
		{"conn-idle-timeout", func(c *Config) { c.ConnIdleTimeout = 0 }, `conn-idle-timeout: 0s is below 1ms`},
		{"queue-timeout", func(c *Config) { c.QueueTimeout = 0 }, `queue-timeout: 0s is below 1ms`},
		{"poll-interval", func(c *Config) { c.PollInterval = -1 }, `poll-interval: -1ns is below 0s`},
		{"max-conns", func(c *Config) { c.MaxConns = 0 }, `max-conns: 0 is below 1`},
		{"max-queue", func(c *Config) { c.MaxQueue = 0 }, `max-queue: 0 is below 1`},
		{"log-level", func(c *Config) { c.LogLevel = "loud" }, `log-level: "loud" is not debug, info, warn or error`},
		{"access-log", func(c *Config) { c.AccessLog = "xml" }, `access-log: "xml" is not json, combined, ltsv or off`},
		{"http1-server", func(c *Config) { c.HTTP1Server = "fast" }, `http1-server: "fast" is not lean or net/http`},
		{"log-file", func(c *Config) { c.LogFile = "realroot.log" }, `log-file: "realroot.log" is not an absolute path (empty means stderr)`},
		{"access-log-file", func(c *Config) { c.AccessLogFile = "access.log" }, `access-log-file: "access.log" is not an absolute path (empty means stderr)`},
		{"body-timeout", func(c *Config) { c.BodyTimeout = 0 }, `body-timeout: 0s is below 1ms`},
		{"max-uri-length 0", func(c *Config) { c.MaxURILength = 0 }, `max-uri-length: 0 is not between 1 and 64k (the HTTP server's limit on a request's headers)`},
		{"max-uri-length", func(c *Config) { c.MaxURILength = 1 << 20 }, `max-uri-length: 1m is not between 1 and 64k (the HTTP server's limit on a request's headers)`},
		{"admin", func(c *Config) { c.Admin = "9180" }, `admin: "9180" is not host:port`},
		{"warm", func(c *Config) { c.Warm = []string{"/", "health.php"} }, `warm: "health.php" does not start with /`},
		{"warm control", func(c *Config) { c.Warm = []string{"/a\nb"} }, `warm: "/a\nb" has control characters`},
		{"warm-timeout", func(c *Config) { c.WarmTimeout = 0 }, `warm-timeout: 0s is below 1ms`},
		{"warm-failure", func(c *Config) { c.WarmFailure = "abort" }, `warm-failure: "abort" is not keep or switch`},
		{"on-drain-timeout", func(c *Config) { c.OnDrainTimeout = -time.Second }, `on-drain-timeout: -1s is below 1ms`},
	}
	all := Default()
	all.Root = "/srv/app/current/public"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Root = "/srv/app/current/public"
			tt.give(&c)
			err := c.Validate()
			if err == nil || err.Error() != tt.want {
				t.Errorf("Validate() = %v; want exactly %q", err, tt.want)
			}
		})
		tt.give(&all)
	}
	// Every problem is reported at once.
	err := all.Validate()
	for _, tt := range tests {
		switch tt.name {
		case "no listen", "listen", "no root", "no fastcgi", "fastcgi", "no php-ext", "cache-control match", "max-uri-length 0", "warm",
			"header match", "header name":
			continue // a later case sets the same field
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate() with every problem lacks %q; got:\n%v", tt.want, err)
		}
	}

	good := Default()
	good.Root = "/srv/app/current"
	good.FastCGI = []string{"unix:/run/php/a.sock", "10.0.0.2:9000"}
	good.CacheControl = []CacheRule{{".css", "public"}, {"/build/", "immutable"}, {"*", "no-cache"}}
	good.LogFile, good.AccessLogFile = "/var/log/realroot.log", "/var/log/realroot-access.log"
	good.Admin, good.Warm, good.WarmFailure, good.MaxURILength = "127.0.0.1:0", []string{"/", "/health.php?deep=1"}, "switch", 64<<10
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(good) = %v; want nil", err)
	}
}

func TestSize(t *testing.T) {
	for give, want := range map[string]int64{"0": 0, "1024": 1024, "512k": 512 << 10, "32m": 32 << 20, "1G": 1 << 30} {
		var s Size
		if err := s.Set(give); err != nil || int64(s) != want {
			t.Errorf("Size.Set(%q) = %d, %v; want %d", give, s, err, want)
		}
	}
	for _, give := range []string{"", "-1", "1t", "m", "9999999999999g"} {
		var s Size
		if err := s.Set(give); err == nil {
			t.Errorf("Size.Set(%q) accepted", give)
		}
	}
	for give, want := range map[Size]string{0: "0", 1000: "1000", 1 << 20: "1m", 1536 << 10: "1536k", 2 << 30: "2g"} {
		if got := give.String(); got != want {
			t.Errorf("Size(%d).String() = %q; want %q", int64(give), got, want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for give, want := range map[time.Duration]string{
		0: "0s", 5 * time.Second: "5s", time.Minute: "1m", 75 * time.Second: "1m15s",
		time.Hour: "1h", 90 * time.Minute: "1h30m", 250 * time.Millisecond: "250ms",
	} {
		d := duration(give)
		if got := d.String(); got != want {
			t.Errorf("duration(%v).String() = %q; want %q", give, got, want)
		}
	}
}

func TestParseFastCGI(t *testing.T) {
	for give, want := range map[string]string{
		"unix:/run/php.sock": "unix /run/php.sock",
		"127.0.0.1:9000":     "tcp 127.0.0.1:9000",
		"php:9000":           "tcp php:9000",
		"[::1]:9000":         "tcp [::1]:9000",
	} {
		n, a, err := ParseFastCGI(give)
		if err != nil || n+" "+a != want {
			t.Errorf("ParseFastCGI(%q) = %s %s, %v; want %s", give, n, a, err, want)
		}
	}
	for _, give := range []string{"unix:run.sock", "/run/php.sock", "php", "127.0.0.1:", "php:0", "php:65536"} {
		if _, _, err := ParseFastCGI(give); err == nil {
			t.Errorf("ParseFastCGI(%q) accepted", give)
		}
	}
}

func TestChanged(t *testing.T) {
	a, b := Default(), Default()
	if got := Changed(a, b); len(got) != 0 {
		t.Errorf("Changed(defaults, defaults) = %v; want none", got)
	}
	b.Root = "/x"
	b.Params = map[string]string{"A": "1"}
	b.KeepAlive = false
	if got, want := strings.Join(Changed(a, b), ","), "keepalive,param,root"; got != want {
		t.Errorf("Changed = %s; want %s", got, want)
	}
}
