package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"realroot/conf"
	"realroot/internal/phpfpmtest"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		code    int
		wantOut string
	}{
		{name: "version", args: []string{"version"}, code: 0, wantOut: "realroot dev"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, wantOut: `unknown command "frobnicate"`},
		{name: "no root", args: []string{"--listen", "127.0.0.1:0"}, code: 2, wantOut: "root: required"},
		{name: "bad flag", args: []string{"--read-timeout", "soon"}, code: 2, wantOut: "read-timeout"},
		{name: "bad env", env: map[string]string{"REALROOT_FASTCGI": "php"}, args: []string{"--root", "/x"}, code: 2,
			wantOut: `fastcgi: "php" is not unix:/path or host:port`},
		{name: "root missing", args: []string{"--root", "/nonexistent/current", "--listen", "127.0.0.1:0"}, code: 1,
			wantOut: "/nonexistent/current"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(tt.args, func(k string) string { return tt.env[k] }, &out, &out)
			if code != tt.code || !strings.Contains(out.String(), tt.wantOut) {
				t.Fatalf("run(%q) = %d, output %q; want %d and %q", tt.args, code, out.String(), tt.code, tt.wantOut)
			}
		})
	}
}

// TestServe runs the whole server on a symlinked root in front of a real
// php-fpm, switches the release and shuts down.
func TestServe(t *testing.T) {
	fpm := phpfpmtest.Start(t, phpfpmtest.Options{Workers: 2})
	dir := t.TempDir()
	for _, rel := range []string{"1", "2"} {
		p := filepath.Join(dir, "releases", rel, "public")
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "index.php"), []byte("<?php echo 'release "+rel+" ', $_SERVER['DOCUMENT_ROOT'];"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("releases/1", filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	c := conf.Default()
	c.Root = filepath.Join(dir, "current", "public")
	c.FastCGI = "unix:" + fpm.Socket
	c.Listen = []string{"127.0.0.1:0"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- runServer(ctx, c, zap.New(core), zap.New(core), func(a []net.Addr) { addrc <- a[0] })
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("runServer: %v", err)
	}
	body := func() string {
		resp, err := http.Get("http://" + addr.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got, want := body(), "release 1 "+filepath.Join(dir, "releases/1/public"); got != want {
		t.Fatalf("GET / = %q; want %q", got, want)
	}
	tmp := filepath.Join(dir, "current.tmp")
	if err := os.Symlink("releases/2", tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "current")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasPrefix(body(), "release 2 ") {
		if time.Now().After(deadline) {
			t.Fatal("the switch to release 2 was not served within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("runServer after cancel: %v", err)
	}
	if logs.FilterMessage("request").Len() < 2 {
		t.Errorf("access log has %d lines; want one per request", logs.FilterMessage("request").Len())
	}
	if logs.FilterMessage("release switched").Len() != 1 {
		t.Errorf("want one release switched log line; got %v", logs.FilterMessage("release switched").All())
	}
}
