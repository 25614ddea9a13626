package main

// From a review of the docs against the code: the container entrypoint's
// stop signal.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGQUITDrains: the php:*-fpm images (and nginx's) set
// STOPSIGNAL SIGQUIT, so docker stop and Kubernetes send SIGQUIT to the
// entrypoint of docs/running.md's Dockerfile. SIGQUIT is a graceful stop for
// nginx and php-fpm alike: realroot drains its requests, stops php-fpm and
// exits with php-fpm's status, as on SIGTERM. Before, Go's default handler
// dumped the goroutines and exited 2 with requests in flight.
func TestSIGQUITDrains(t *testing.T) {
	argv, sock := fpmCommand(t)
	dir := site(t)
	p := startRealroot(t, nil, append([]string{"--root", filepath.Join(dir, "current", "public"),
		"--fastcgi", "unix:" + sock, "--listen", "127.0.0.1:0", "--"}, argv...)...)
	pid := fpmPid(t, p)

	slow := make(chan string, 1)
	mark := filepath.Join(dir, "mark")
	go func() {
		status, body, err := get(&http.Client{Timeout: 20 * time.Second}, p.url("/slow.php?ms=800&mark="+mark))
		slow <- fmt.Sprintf("%d %s %v", status, body, err)
	}()
	waitMarks(t, mark)
	p.signal(syscall.SIGQUIT)
	if r := <-slow; r != "200 slow done <nil>" {
		t.Errorf("request in flight at SIGQUIT: %s; want 200 slow done", r)
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code after SIGQUIT = %d; want php-fpm's 0", code)
	}
	if out := p.out.String(); strings.Contains(out, "goroutine ") {
		t.Errorf("SIGQUIT dumped goroutines; want a graceful stop")
	}
	if len(p.logged("signal received; draining")) != 1 {
		t.Errorf("no \"signal received; draining\" log line after SIGQUIT")
	}
	if procs := groupProcs(pid); len(procs) != 0 {
		t.Errorf("php-fpm's processes left after exit: %v", procs)
	}
}
