package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"realroot/proxy/admin"
	"realroot/resolve"
)

const switchUsage = `Usage: realroot switch RELEASE_DIR [--link PATH] [--wait --admin ADDR [--timeout 60s]]

Points the link at RELEASE_DIR atomically: a new symlink under a temporary
name, renamed over the link (mv -T), so that the link never is missing. The
link stores RELEASE_DIR relative to the link's directory when it is below it
(current -> releases/B). RELEASE_DIR must be a directory.

  --link PATH      the symlink to switch (REALROOT_LINK); default: "current"
                   beside RELEASE_DIR's parent, e.g. /srv/app/current for
                   /srv/app/releases/B, when that is a symlink
  --wait           ask the running server (--admin) until it serves
                   RELEASE_DIR and the previous release has drained; exit 1
                   when --timeout passes first
  --admin ADDR     the server's admin address (REALROOT_ADMIN), e.g.
                   127.0.0.1:9180
  --timeout DUR    how long --wait waits (default 60s)
`

// switchRelease is `realroot switch`.
func switchRelease(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
	flags := flag.NewFlagSet("switch", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	link := flags.String("link", getenv("REALROOT_LINK"), "")
	wait := flags.Bool("wait", false, "")
	adminAddr := flags.String("admin", getenv("REALROOT_ADMIN"), "")
	timeout := flags.Duration("timeout", 60*time.Second, "")
	pos, err := parseArgs(flags, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, switchUsage)
		return nil
	}
	if err != nil {
		return &usageError{fmt.Errorf("switch: %w", err)}
	}
	if len(pos) != 1 {
		return &usageError{fmt.Errorf("switch: want one RELEASE_DIR, got %q", pos)}
	}
	target, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if *link == "" {
		l := filepath.Join(filepath.Dir(filepath.Dir(target)), "current")
		if fi, err := os.Lstat(l); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return &usageError{fmt.Errorf("switch: %s is not a symlink: give the link to switch with --link", l)}
		}
		*link = l
	}
	if *timeout <= 0 {
		return &usageError{fmt.Errorf("switch: --timeout %v is not positive", *timeout)}
	}
	var base string
	if *wait {
		if *adminAddr == "" {
			return &usageError{errors.New("switch: --wait needs --admin ADDR (or REALROOT_ADMIN): the server's admin address")}
		}
		if base, err = adminBase(*adminAddr); err != nil {
			return &usageError{fmt.Errorf("switch: %w", err)}
		}
	}

	ctx, stop := signalContext(sigs)
	defer stop()
	var before admin.Status
	if *wait {
		// Ask first: waiting on a server that cannot be asked would only
		// time out after the switch.
		if before, err = fetchStatus(ctx, base); err != nil {
			return fmt.Errorf("switch: cannot ask the server; not switching: %w", err)
		}
	}
	if err := resolve.Switch(*link, target); err != nil {
		return err
	}
	content, _ := os.Readlink(*link)
	fmt.Fprintf(stdout, "%s -> %s\n", *link, content)
	if !*wait {
		return nil
	}
	return waitSwitch(ctx, stdout, base, before.Current, target, *timeout)
}

// waitSwitch polls the server at base until it serves target (a generation
// newer than prev) and prev has drained, printing each step.
func waitSwitch(ctx context.Context, w io.Writer, base string, prev resolve.Info, target string, timeout time.Duration) error {
	real, err := filepath.EvalSymlinks(target)
	if err != nil {
		return err
	}
	if inRelease(prev, real) {
		fmt.Fprintf(w, "the server already serves %s (gen %d)\n", prev.Dir, prev.Gen)
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()

	var (
		switched bool
		answered bool // a status came since the switch
		last     admin.Status
		lastErr  error
	)
	for {
		s, err := fetchStatus(ctx, base)
		if lastErr = err; err == nil {
			last, answered = s, true
			if !switched && s.Current.Gen > prev.Gen && inRelease(s.Current, real) {
				switched = true
				fmt.Fprintf(w, "the server serves %s (gen %d) after %v\n", s.Current.Dir, s.Current.Gen, since(start))
			}
			if switched {
				if _, draining := inFlight(s, prev); !draining {
					fmt.Fprintf(w, "the previous release %s (gen %d) drained after %v\n", prev.Dir, prev.Gen, since(start))
					return nil
				}
			}
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errors.New("switch: interrupted while waiting; the link was switched")
		}
		switch {
		case lastErr != nil && (!answered || !errors.Is(lastErr, context.DeadlineExceeded)):
			// A fetch cut by the deadline is no news when an earlier one
			// answered; when none did, last is empty.
			return fmt.Errorf("switch: timed out after %v: cannot ask the server: %w", timeout, lastErr)
		case !switched:
			return fmt.Errorf("switch: timed out after %v: the server still serves %s (gen %d), not %s; a failed warm-up keeps the old release (see the server's log), or --admin is not the server of this link",
				timeout, last.Current.Dir, last.Current.Gen, real)
		}
		n, _ := inFlight(last, prev)
		return fmt.Errorf("switch: timed out after %v: the previous release %s (gen %d) still has %d in flight",
			timeout, prev.Dir, prev.Gen, n)
	}
}

// inFlight returns the requests in flight on the release prev, and whether
// it is still draining: its generation, or its directory (a reload that
// rebuilt the root watcher lists it under the older watcher's number).
func inFlight(s admin.Status, prev resolve.Info) (int64, bool) {
	var n int64
	draining := false
	for _, d := range s.Draining {
		if d.Gen == prev.Gen || d.Dir == prev.Dir {
			n += d.InFlight
			draining = true
		}
	}
	return n, draining
}

func since(t time.Time) time.Duration {
	return time.Since(t).Round(time.Millisecond)
}
