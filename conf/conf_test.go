package conf

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(c Config) string // "" when right
	}{
		{
			name: "defaults",
			want: func(c Config) string {
				if c.FastCGI != "unix:/run/php/php8.2-fpm.sock" || c.MaxBodySize != 1<<20 || c.ReadTimeout != 60*time.Second ||
					strings.Join(c.Index, ",") != "index.php,index.html" || c.FrontController != "/index.php" {
					return "defaults changed"
				}
				return ""
			},
		},
		{
			name: "env over defaults",
			env:  map[string]string{"REALROOT_ROOT": "/srv/app/current", "REALROOT_LISTEN": "127.0.0.1:1, 127.0.0.1:2", "REALROOT_MAX_BODY_SIZE": "32m"},
			want: func(c Config) string {
				if c.Root != "/srv/app/current" || strings.Join(c.Listen, ",") != "127.0.0.1:1,127.0.0.1:2" || c.MaxBodySize != 32<<20 {
					return "env not applied"
				}
				return ""
			},
		},
		{
			name: "flags over env",
			env:  map[string]string{"REALROOT_ROOT": "/env", "REALROOT_DENY": "/a,/b"},
			args: []string{"--root", "/flag", "--deny", "/c", "--deny", "/d", "--param", "A=1", "--param", "B=x=y"},
			want: func(c Config) string {
				if c.Root != "/flag" || strings.Join(c.Deny, ",") != "/c,/d" || c.Params["A"] != "1" || c.Params["B"] != "x=y" {
					return "flags did not override"
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.want(c); msg != "" {
				t.Fatalf("%s: got %+v", msg, c)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	if _, _, err := Load(nil, env(map[string]string{"REALROOT_READ_TIMEOUT": "soon"}), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "REALROOT_READ_TIMEOUT") {
		t.Errorf("bad env duration: got %v; want an error naming REALROOT_READ_TIMEOUT", err)
	}
	if _, _, err := Load([]string{"--max-body-size", "12q"}, env(nil), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "max-body-size") {
		t.Errorf("bad size flag: got %v; want an error naming max-body-size", err)
	}
	if _, _, err := Load([]string{"--nope"}, env(nil), io.Discard); err == nil {
		t.Errorf("unknown flag accepted")
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Root = "relative/path"
	c.Listen = []string{"8080"}
	c.FastCGI = "tcp:foo"
	c.FrontController = "index.php"
	c.PHPExtensions = []string{"php"}
	c.Deny = []string{"data"}
	c.ReadTimeout = 0
	c.LogLevel = "loud"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{
		`listen: "8080" is not host:port`,
		`root: "relative/path" is not an absolute path`,
		`fastcgi: "tcp:foo" is not unix:/path or host:port`,
		`front-controller: "index.php" does not start with /`,
		`php-ext: "php" is not an extension like .php`,
		`deny: "data" does not start with /`,
		`read-timeout: 0s is below 1ms`,
		`log-level: "loud" is not debug, info, warn or error`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q; got:\n%v", want, err)
		}
	}

	good := Default()
	good.Root = "/srv/app/current"
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(defaults + root) = %v; want nil", err)
	}
	good.Root = ""
	if err := good.Validate(); err == nil || !strings.Contains(err.Error(), "root: required") {
		t.Errorf("Validate without root = %v; want root: required", err)
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
}

func TestFastCGIAddr(t *testing.T) {
	for give, want := range map[string]string{
		"unix:/run/php.sock": "unix /run/php.sock",
		"127.0.0.1:9000":     "tcp 127.0.0.1:9000",
		"php:9000":           "tcp php:9000",
	} {
		c := Config{FastCGI: give}
		n, a, err := c.FastCGIAddr()
		if err != nil || n+" "+a != want {
			t.Errorf("FastCGIAddr(%q) = %s %s, %v; want %s", give, n, a, err, want)
		}
	}
	for _, give := range []string{"unix:run.sock", "/run/php.sock", "php", "127.0.0.1:"} {
		c := Config{FastCGI: give}
		if _, _, err := c.FastCGIAddr(); err == nil {
			t.Errorf("FastCGIAddr(%q) accepted", give)
		}
	}
}
