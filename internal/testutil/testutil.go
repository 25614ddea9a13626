// Package testutil holds what realroot's tests share beyond a php-fpm
// (internal/phpfpmtest) and a FastCGI responder (internal/fcgitest).
package testutil

import (
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
