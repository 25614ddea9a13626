// Package testutil holds what realroot's tests share beyond a php-fpm
// (internal/phpfpmtest) and a FastCGI responder (internal/fcgitest).
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// WaitFor polls cond every 2ms until it holds; past 10s it fails t with
// "timed out waiting for " + what.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// FakeTB is a testing.TB for testing a helper that must fail its test: Fatal
// and Fatalf record the message in Msg and end the goroutine (run the helper
// in one of its own), Errorf only logs, and cleanups run on RunCleanups.
type FakeTB struct {
	testing.TB
	Msg      string
	cleanups []func()
}

func (f *FakeTB) Helper()           {}
func (f *FakeTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *FakeTB) Errorf(format string, args ...any) {
	f.TB.Logf("FakeTB.Errorf: "+format, args...)
}
func (f *FakeTB) Fatalf(format string, args ...any) {
	f.Msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *FakeTB) Fatal(args ...any) {
	f.Msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// RunCleanups runs the cleanups registered so far, last first.
func (f *FakeTB) RunCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// GroupPids returns the pids of live (non-zombie) processes in process group
// pgid, read from /proc.
func GroupPids(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and ')'.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		var state string
		var ppid, pgrp int
		if _, err := fmt.Sscan(string(data[i+1:]), &state, &ppid, &pgrp); err != nil {
			continue
		}
		if pgrp == pgid && state != "Z" && state != "X" {
			pids = append(pids, pid)
		}
	}
	return pids
}
