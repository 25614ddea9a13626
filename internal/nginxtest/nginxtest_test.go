package nginxtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStartServesAndStopLeavesNothing(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := Start(t, Options{HTTP: fmt.Sprintf(`
	server {
		listen 127.0.0.1:{{port}};
		root %s;
		access_log {{prefix}}/access.log;
	}`, root)})
	if _, port, _ := net.SplitHostPort(srv.Addr); port != srv.Port || !strings.HasPrefix(srv.Addr, "127.0.0.1:") {
		t.Errorf("Addr %q, Port %q", srv.Addr, srv.Port)
	}
	resp, err := http.Get("http://" + srv.Addr + "/a.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("GET /a.txt = %d %q (%s); want 200 hello, text/plain", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	// {{prefix}} was filled: the line is there once the request is over.
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, _ := os.ReadFile(filepath.Join(srv.Prefix, "access.log"))
		if bytes.Contains(b, []byte(`"GET /a.txt HTTP/1.1" 200 6`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access.log = %q; want the GET\n%s", b, srv.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}

	pgid := srv.Pid()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if pids := testutil.GroupPids(pgid); len(pids) != 0 {
		t.Errorf("after Stop: pids %v still in group %d", pids, pgid)
	}
	if c, err := net.Dial("tcp", srv.Addr); err == nil {
		c.Close()
		t.Errorf("%s accepts after Stop", srv.Addr)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestHasModule(t *testing.T) {
	Require(t)
	if HasModule("no_such") {
		t.Error(`HasModule("no_such") = true`)
	}
	v := configure()
	if want := strings.Contains(v, "--with-http_ssl_module"); HasModule("ssl") != want {
		t.Errorf(`HasModule("ssl") = %v; nginx -V says %v`, !want, want)
	}
	if strings.Contains(v, "--with-http_image_filter_module=dynamic") && HasModule("image_filter") {
		t.Error(`HasModule("image_filter") = true for a dynamic module`)
	}
}

func TestStartFailsFastOnBadConfig(t *testing.T) {
	Require(t)
	ft := &testutil.FakeTB{TB: t}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer ft.RunCleanups()
		Start(ft, Options{HTTP: "server { listen 127.0.0.1:{{port}}; bogus_directive on; }"})
	})
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Start took %v to fail; want fast failure", d)
	}
	if !strings.Contains(ft.Msg, `unknown directive "bogus_directive"`) {
		t.Errorf("Fatal message = %q; want nginx's complaint", ft.Msg)
	}
}
