// Regression tests of a review (2026-11-22). Each test's comment tells the
// bug it caught, since fixed.

package conf

import (
	"strings"
	"testing"
	"time"
)

// TestValidateDuplicateFastCGI: max-conns bounds connections per fastcgi
// address, and each is meant to be php-fpm's pm.max_children. The same
// address given twice (a copy-paste, or a file's list plus the same in
// REALROOT_FASTCGI=a,a) passes Validate: realroot then opens up to twice
// max-conns connections to one php-fpm, so requests wait inside php-fpm
// where no realroot timeout sees them (docs/configuration.md, "php-fpm
// connections"), the balancer "fails over" to the same pool, and /metrics
// gets two series with the same addr label (the registry drops one and
// logs an error on every scrape).
func TestValidateDuplicateFastCGI(t *testing.T) {
	c, _, err := Load(nil, env(map[string]string{
		"REALROOT_ROOT":    "/srv/app/current/public",
		"REALROOT_FASTCGI": "127.0.0.1:9000,127.0.0.1:9000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "fastcgi") {
		t.Fatalf("Validate() with fastcgi %q = %v; want an error naming fastcgi and the repeated address", c.FastCGI, err)
	}
}

// TestInternalLocationEnv: REALROOT_INTERNAL_LOCATION holds one PREFIX=DIR
// per line, like param, header and cache-control, as docs/configuration.md
// now says (it said lists were comma-separated but for param and
// cache-control, and two comma-separated locations became one).
func TestInternalLocationEnv(t *testing.T) {
	c, _, err := Load(nil, env(map[string]string{
		"REALROOT_ROOT":              "/srv/app/current/public",
		"REALROOT_INTERNAL_LOCATION": "/a=/x\n/b=/y",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.InternalLocations) != 2 || c.InternalLocations["/a"] != "/x" || c.InternalLocations["/b"] != "/y" {
		t.Errorf("REALROOT_INTERNAL_LOCATION=/a=/x\\n/b=/y gives %q; want /a=/x and /b=/y", c.InternalLocations)
	}
}

// TestValidatePollIntervalTiny: poll-interval re-reads every symlink of the
// root and stats its directory each DURATION. Validate bounds it only
// below 0, so "1ns" (or "1us", a typo of "1s") passes and the watcher
// spins a ticker on syscalls: upstream-health-interval has a floor of
// 100ms for the same reason, poll-interval none.
func TestValidatePollIntervalTiny(t *testing.T) {
	c := Default()
	c.Root = "/srv/app/current/public"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{time.Nanosecond, time.Microsecond} {
		c.PollInterval = d
		if err := c.Validate(); err == nil {
			t.Errorf("Validate() with poll-interval %v = nil; want an error naming poll-interval and its floor (0 turns it off)", d)
		}
	}
}
