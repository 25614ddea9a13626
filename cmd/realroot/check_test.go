package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"realroot/internal/phpfpmtest"
)

func TestCheck(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 1}) // ping.path = /fpm-ping
	dir := site(t)
	root := filepath.Join(dir, "current", "public")
	real := filepath.Join(dir, "releases", "1", "public")
	missing := filepath.Join(t.TempDir(), "none.sock")
	cfg := filepath.Join(t.TempDir(), "realroot.toml")
	if err := os.WriteFile(cfg, []byte("root = \""+root+"\"\nfastcgi = \"unix:"+fpm.Socket+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	q := regexp.QuoteMeta
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string // a regexp for the whole output
	}{
		{
			name: "php-fpm answers a missing script",
			args: []string{"--root", root, "--fastcgi", "unix:" + fpm.Socket},
			want: `^config: ok\nroot ` + q(root) + `: ok \(release ` + q(real) + `\)\n` +
				`fastcgi unix:` + q(fpm.Socket) + `: ok \(php-fpm answered 404 for a missing script\)\n$`,
		},
		{
			name: "ping path, config file from the environment",
			args: []string{"--ping-path", "/fpm-ping", "--", "php-fpm8.2", "-F"},
			env:  map[string]string{"REALROOT_CONFIG": cfg},
			want: `^config ` + q(cfg) + `: ok\nroot ` + q(root) + `: ok \(release ` + q(real) + `\)\n` +
				`fastcgi unix:` + q(fpm.Socket) + `: ok \(ping /fpm-ping: 200 pong\)\n$`,
		},
		{
			name: "wrong ping path",
			args: []string{"--root", root, "--fastcgi", "unix:" + fpm.Socket, "--ping-path", "/ping"},
			code: 1,
			want: `\nfastcgi unix:` + q(fpm.Socket) + `: failed: ping /ping answered 404; is ping.path = /ping set in php-fpm's pool\?\n$`,
		},
		{
			name: "php-fpm missing",
			args: []string{"--root", root, "--fastcgi", "unix:" + fpm.Socket, "--fastcgi", "unix:" + missing},
			code: 1,
			want: `\nfastcgi unix:` + q(fpm.Socket) + `: ok \(php-fpm answered 404 for a missing script\)\n` +
				`fastcgi unix:` + q(missing) + `: failed: fastcgi: connect: dial unix ` + q(missing) + `: .*no such file or directory\n$`,
		},
		{
			name: "root missing",
			args: []string{"--root", "/nonexistent/current/public", "--fastcgi", "unix:" + fpm.Socket},
			code: 1,
			want: `^config: ok\nroot /nonexistent/current/public: failed: .*\nfastcgi unix:` + q(fpm.Socket) + `: ok`,
		},
		{
			name: "invalid config",
			args: []string{"--root", "relative", "--fastcgi", "php", "--max-conns", "0"},
			code: 1,
			want: `^config: failed:\n    root: "relative" is not an absolute path\n    fastcgi: "php" is not unix:/path or host:port\n` +
				`    max-conns: 0 is below 1\nroot: skipped \(invalid\)\nfastcgi php: skipped \(invalid\)\n$`,
		},
		{
			name: "config file missing",
			args: []string{"--config", "/nonexistent/realroot.toml"},
			code: 1,
			want: `^config /nonexistent/realroot.toml: failed: open /nonexistent/realroot.toml: no such file or directory\n$`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(append([]string{"check"}, tt.args...), func(k string) string { return tt.env[k] }, &out, &errOut, nil)
			if code != tt.code || !regexp.MustCompile(tt.want).MatchString(out.String()) {
				t.Errorf("check %q = %d, output:\n%s\nstderr: %s\nwant %d and output matching\n%s", tt.args, code, out.String(), errOut.String(), tt.code, tt.want)
			}
		})
	}
}
