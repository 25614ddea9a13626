package phpfpmtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"realroot/internal/testutil"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStartAcceptsAndStopLeavesNothing(t *testing.T) {
	srv := Start(t, Options{Workers: 2})
	if !filepath.IsAbs(srv.Socket) || len(srv.Socket) > 100 {
		t.Errorf("Socket = %q; want an absolute path under 100 bytes", srv.Socket)
	}
	pgid := srv.Pid()
	// master + 2 workers; workers fork right after the socket is bound.
	waitFor(t, func() bool { return len(testutil.GroupPids(pgid)) == 3 },
		func() string {
			return fmt.Sprintf("group %d: pids %v; want 3 (master + 2 workers)", pgid, testutil.GroupPids(pgid))
		})

	got := fcgiGet(t, srv.Socket, "/fpm-ping", "", nil)
	if !strings.HasSuffix(got, "pong") {
		t.Errorf("GET /fpm-ping = %q; want ...pong", got)
	}

	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if pids := testutil.GroupPids(pgid); len(pids) != 0 {
		t.Errorf("after Stop: pids %v still in group %d", pids, pgid)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestKillAndRestart(t *testing.T) {
	srv := Start(t, Options{Workers: 3})
	pgid := srv.Pid()
	if err := srv.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if pids := testutil.GroupPids(pgid); len(pids) != 0 {
		t.Errorf("after Kill: pids %v still in group %d", pids, pgid)
	}
	if c, err := net.Dial("unix", srv.Socket); err == nil {
		c.Close()
		t.Errorf("socket accepts after Kill")
	}

	srv.Restart(t)
	if srv.Pid() == pgid {
		t.Errorf("Restart kept pid %d", pgid)
	}
	if got := fcgiGet(t, srv.Socket, "/fpm-ping", "", nil); !strings.HasSuffix(got, "pong") {
		t.Errorf("GET /fpm-ping after Restart = %q; want ...pong", got)
	}
	srv.Restart(t) // Restart of a running server kills it first.
	if got := fcgiGet(t, srv.Socket, "/fpm-ping", "", nil); !strings.HasSuffix(got, "pong") {
		t.Errorf("GET /fpm-ping after second Restart = %q; want ...pong", got)
	}
}

func TestPHPSettings(t *testing.T) {
	srv := Start(t, Options{
		Workers: 1,
		INI:     map[string]string{"memory_limit": "77M"},
		Pool:    map[string]string{"request_terminate_timeout": "5s"},
	})
	script := filepath.Join(srv.Dir, "info.php")
	php := `<?php
$s = opcache_get_status(false);
echo json_encode([
  "opcache" => is_array($s) && $s["opcache_enabled"],
  "validate_timestamps" => ini_get("opcache.validate_timestamps"),
  "revalidate_path" => ini_get("opcache.revalidate_path"),
  "realpath_cache_ttl" => ini_get("realpath_cache_ttl"),
  "display_errors" => ini_get("display_errors"),
  "log_errors" => ini_get("log_errors"),
  "error_log" => ini_get("error_log"),
  "memory_limit" => ini_get("memory_limit"),
]);
error_log("to-stderr");
`
	if err := os.WriteFile(script, []byte(php), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	got := fcgiGet(t, srv.Socket, "/info.php", script, &stderr)
	want := `{"opcache":true,"validate_timestamps":"0","revalidate_path":"0","realpath_cache_ttl":"120",` +
		`"display_errors":"","log_errors":"1","error_log":"","memory_limit":"77M"}`
	if !strings.HasSuffix(got, want) {
		t.Errorf("info.php = %q; want body %s\n%s", got, want, srv.Log())
	}
	if !strings.Contains(stderr.String(), "to-stderr") {
		t.Errorf("FCGI_STDERR = %q; want error_log() output", stderr.String())
	}
	conf, err := os.ReadFile(filepath.Join(srv.Dir, "php-fpm.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(conf, []byte("request_terminate_timeout = 5s\n")) {
		t.Errorf("php-fpm.conf lacks the Pool override:\n%s", conf)
	}
}

func TestStartFailsFastOnBadConfig(t *testing.T) {
	if _, err := Binary(); err != nil {
		t.Skip(err)
	}
	ft := &testutil.FakeTB{TB: t}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer ft.RunCleanups()
		Start(ft, Options{Pool: map[string]string{"pm": "bogus"}})
	})
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %v to fail; want fast failure", d)
	}
	if !strings.Contains(ft.Msg, "exited during start-up") || !strings.Contains(ft.Msg, "invalid process manager") {
		t.Errorf("Fatal message = %q; want the exit and php-fpm's complaint about pm", ft.Msg)
	}
}

func waitFor(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fcgiGet sends one FastCGI GET for uri (running script if non-empty) and
// returns FCGI_STDOUT; FCGI_STDERR goes to stderr when non-nil. A minimal
// client so this package tests itself without the transport under test.
func fcgiGet(t *testing.T, sock, uri, script string, stderr io.Writer) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))

	params := map[string]string{
		"REQUEST_METHOD":    "GET",
		"SCRIPT_NAME":       uri,
		"REQUEST_URI":       uri,
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"GATEWAY_INTERFACE": "CGI/1.1",
	}
	if script == "" {
		// php-fpm matches ping/status paths only once a script path is set.
		script = uri
	}
	params["SCRIPT_FILENAME"] = script
	var p bytes.Buffer
	for k, v := range params {
		p.WriteByte(byte(len(k)))
		p.WriteByte(byte(len(v)))
		p.WriteString(k)
		p.WriteString(v)
	}
	w := bufio.NewWriter(c)
	writeRecord(w, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}) // BEGIN_REQUEST, RESPONDER
	writeRecord(w, 4, p.Bytes())                      // PARAMS
	writeRecord(w, 4, nil)
	writeRecord(w, 5, nil) // STDIN
	if err := w.Flush(); err != nil {
		t.Fatalf("write: %v", err)
	}

	var stdout bytes.Buffer
	r := bufio.NewReader(c)
	for {
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			t.Fatalf("read header: %v (stdout so far %q)", err, stdout.String())
		}
		n := int(binary.BigEndian.Uint16(h[4:6]))
		body := make([]byte, n+int(h[6]))
		if _, err := io.ReadFull(r, body); err != nil {
			t.Fatalf("read body: %v", err)
		}
		switch h[1] {
		case 6:
			stdout.Write(body[:n])
		case 7:
			if stderr != nil {
				stderr.Write(body[:n])
			}
		case 3:
			return stdout.String()
		}
	}
}

func writeRecord(w io.Writer, typ byte, content []byte) {
	h := []byte{1, typ, 0, 1, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(h[4:6], uint16(len(content)))
	w.Write(h)
	w.Write(content)
}
