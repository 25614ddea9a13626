package conf

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// TestTLSKeys sets each TLS and PROXY protocol setting from the file, the
// environment and the flags.
func TestTLSKeys(t *testing.T) {
	tests := []struct {
		key  string
		file string
		env  string
		args []string
		want func(c *Config)
	}{
		{"tls-cert", `["/a.pem", "/b.pem"]`, "/a.pem,/b.pem", []string{"--tls-cert", "/a.pem", "--tls-cert", "/b.pem"},
			func(c *Config) { c.TLSCert = []string{"/a.pem", "/b.pem"} }},
		{"tls-key", `["/a.key"]`, "/a.key", []string{"--tls-key=/a.key"}, func(c *Config) { c.TLSKey = []string{"/a.key"} }},
		{"https-redirect", `"0.0.0.0:80"`, "0.0.0.0:80", []string{"--https-redirect", "0.0.0.0:80"},
			func(c *Config) { c.HTTPSRedirect = "0.0.0.0:80" }},
		{"h2c", `true`, "true", []string{"--h2c"}, func(c *Config) { c.H2C = true }},
		{"proxy-protocol", `true`, "true", []string{"--proxy-protocol"}, func(c *Config) { c.ProxyProtocol = true }},
		{"trusted-proxy", `["10.0.0.0/8", "2001:db8::1"]`, "10.0.0.0/8, 2001:db8::1",
			[]string{"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8::1"},
			func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "2001:db8::1"} }},
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

func TestValidateTLS(t *testing.T) {
	tls := func(c *Config) { c.TLSCert, c.TLSKey = []string{"/a.pem"}, []string{"/a.key"} }
	tests := []struct {
		name string
		give func(c *Config)
		want string // "" means valid
	}{
		{"tls", tls, ""},
		{"cert without key", func(c *Config) { c.TLSCert = []string{"/a.pem"} },
			`tls-key: required with tls-cert: one key file per certificate, in the same order`},
		{"key without cert", func(c *Config) { c.TLSKey = []string{"/a.key"} },
			`tls-cert: required with tls-key: one certificate file per key, in the same order`},
		{"counts", func(c *Config) { tls(c); c.TLSCert = append(c.TLSCert, "/b.pem") },
			`tls-key: 1 files for 2 tls-cert files; want one key per certificate, in the same order`},
		{"relative", func(c *Config) { c.TLSCert, c.TLSKey = []string{"a.pem"}, []string{""} },
			"tls-cert: \"a.pem\" is not an absolute path\ntls-key: \"\" is not an absolute path"},
		{"https-redirect", func(c *Config) { tls(c); c.HTTPSRedirect = "0.0.0.0:80" }, ""},
		{"https-redirect not host:port", func(c *Config) { tls(c); c.HTTPSRedirect = "80" }, `https-redirect: "80" is not host:port`},
		{"https-redirect without tls", func(c *Config) { c.HTTPSRedirect = "0.0.0.0:80" },
			`https-redirect: "0.0.0.0:80" needs tls-cert: it redirects to HTTPS on the listen addresses`},
		{"https-redirect on listen", func(c *Config) { tls(c); c.HTTPSRedirect = c.Listen[0] },
			`https-redirect: "127.0.0.1:8080" is also a listen address`},
		{"h2c", func(c *Config) { c.H2C = true }, ""},
		{"h2c with tls", func(c *Config) { tls(c); c.H2C = true },
			`h2c: not with tls-cert: over TLS, HTTP/2 is negotiated (ALPN); h2c is for plain-HTTP listen addresses`},
		{"proxy-protocol", func(c *Config) { c.ProxyProtocol, c.TrustedProxies = true, []string{"10.0.0.0/8"} }, ""},
		{"proxy-protocol without trusted-proxy", func(c *Config) { c.ProxyProtocol = true },
			`proxy-protocol: needs trusted-proxy: the load balancers allowed to send a PROXY header`},
		{"trusted-proxy", func(c *Config) { c.TrustedProxies = []string{"10.0.0.0/8", "lb.internal"} },
			`trusted-proxy: "lb.internal" is not an address or a CIDR prefix like 10.0.0.0/8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Root = "/srv/app/current/public"
			tt.give(&c)
			err := c.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || err.Error() != tt.want) {
				t.Errorf("Validate() = %v; want %q", err, tt.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct {
		give, want string // want "" means an error
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"fe80::1%eth0", ""},
		{"10.0.0.0/33", ""},
		{"lb.internal", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := ParsePrefix(tt.give)
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), "is not an address or a CIDR prefix") {
				t.Errorf("ParsePrefix(%q) = %v, %v; want an error", tt.give, got, err)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tt.want) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.give, got, err, tt.want)
		}
	}
}
