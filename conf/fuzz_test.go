package conf

// Fuzz targets for the configuration loader. Plain `go test` runs the seeds;
// `go test -run '^$' -fuzz FuzzLoadFile ./conf` explores. docs/reliability.md
// records the runs.

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// fileKeyNames are the keys a config file may have: every flag but config.
func fileKeyNames() map[string]bool {
	known := map[string]bool{}
	FlagSet(new(Config)).VisitAll(func(f *flag.Flag) {
		if f.Name != "config" {
			known[f.Name] = true
		}
	})
	return known
}

// FuzzLoadFile loads arbitrary bytes as the config file. Invariants: Load
// never panics; it accepts only what parses as TOML and has no top-level key
// but a flag's name (config excluded); its errors name the file; what it
// accepts can be validated and compared without panicking.
func FuzzLoadFile(f *testing.F) {
	for _, s := range []string{
		"",
		"# only a comment\n",
		"root = \"/srv/app/current/public\"\nfastcgi = \"unix:/run/php/php8.2-fpm.sock\"\nlisten = [\"127.0.0.1:8080\", \"[::1]:8080\"]\n",
		"read-timeout = \"90s\"\nmax-body-size = \"32m\"\nmax-conns = 4\nkeepalive = false\npoll-interval = \"0s\"\n",
		"[param]\nAPP_ENV = \"prod\"\nN = 1\nF = 1.5\nB = true\n",
		"param = { A = \"b\" }\ncache-control = [\".css=max-age=60\", \"*=no-cache\"]\n",
		"param.A = \"b\"\n",
		"deny = []\nindex = []\n",
		"listen_addr = \"x\"\n",
		"config = \"/etc/other.toml\"\n",
		"[logging]\nlevel = \"debug\"\n",
		"[[listen]]\nx = 1\n",
		"root = [\"/a\", \"/b\"]\ndeny = [[\"/a\"]]\n",
		"idle-timeout = 1979-05-27\nwarm-timeout = 07:32:00\n",
		"max-conns = 9223372036854775807\nmax-queue = -1\nmax-body-size = \"99999999999g\"\n",
		"root = \"/a\"\nroot = \"/b\"\n",
		"\"root\" = \"/q\"\n",
		"ROOT = \"/x\"\n",
		"root = \"/srv\"\nlisten = \n",
		"root = \"\x00\"\n",
		"root = '''\nmulti\nline'''\n",
	} {
		f.Add([]byte(s))
	}
	known := fileKeyNames()
	path := filepath.Join(f.TempDir(), "realroot.toml")
	noEnv := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, rest, err := Load([]string{"--config", path}, noEnv)
		var doc map[string]any
		perr := toml.Unmarshal(data, &doc)
		if err != nil {
			if !strings.Contains(err.Error(), "config "+path) {
				t.Fatalf("Load(%q): error %q does not name the file", data, err)
			}
			return
		}
		if perr != nil {
			t.Fatalf("Load accepted %q, which is not TOML: %v", data, perr)
		}
		for k := range doc {
			if !known[k] {
				t.Fatalf("Load accepted %q with the unknown key %q", data, k)
			}
		}
		if len(rest) != 0 || c.File != path {
			t.Fatalf("Load(%q) = rest %q, File %q", data, rest, c.File)
		}
		_ = c.Validate()
		_ = Changed(Default(), c)
	})
}

// FuzzLoadEnv sets one REALROOT_* variable to arbitrary text: Load never
// panics, and its errors name the variable.
func FuzzLoadEnv(f *testing.F) {
	var names []string
	FlagSet(new(Config)).VisitAll(func(fl *flag.Flag) {
		if fl.Name != "config" {
			names = append(names, EnvName(fl.Name))
		}
	})
	slices.Sort(names)
	for i, v := range []string{"", "1", "90s", "32m", "a,b,,c", "A=b\nC=d", ".css=max-age=60\n*=x", "true", "-1", "0x10", "\x00", "1e9"} {
		f.Add(uint8(i*7), v)
	}
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		name := names[int(which)%len(names)]
		c, _, err := Load(nil, func(k string) string {
			if k == name {
				return value
			}
			return ""
		})
		if err != nil {
			if !strings.Contains(err.Error(), "environment "+name+": ") {
				t.Fatalf("%s=%q: error %q does not name the variable", name, value, err)
			}
			return
		}
		_ = c.Validate()
		_ = Changed(Default(), c)
	})
}

// TestLoadFileKeyCase: a key that differs from a setting's name only by its
// case (or by a Unicode letter that lower-cases to ASCII, like the Kelvin
// sign) is an unknown key, and Load must refuse it with its line, like any
// other typo. Two spellings of one key must not silently override each other.
func TestLoadFileKeyCase(t *testing.T) {
	for _, give := range []string{
		"ROOT = \"/x\"\n",
		"Read-Timeout = \"5s\"\n",
		"\"\u212aeepalive\" = false\n",
		"root = \"/a\"\nROOT = \"/b\"\n",
		"[PARAM]\nA = \"b\"\n",
	} {
		p := writeFile(t, give)
		if _, _, err := Load([]string{"--config", p}, env(nil)); err == nil || !strings.Contains(err.Error(), ":1: unknown key") &&
			!strings.Contains(err.Error(), ":2: unknown key") {
			t.Errorf("Load(%q) = %v; want an unknown key error with its line", give, err)
		}
	}
}
