// Command realroot is a front server for PHP-FPM that serves a symlinked
// docroot (current -> releases/N) with every request pinned to one release.
//
// Usage:
//
//	realroot [serve] --root /srv/app/current/public --fastcgi unix:/run/php/php8.2-fpm.sock
//	realroot demo
//	realroot version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is main with its world passed in; it returns the exit status.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !isFlag(args[0]) {
		cmd, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, getenv, stderr)
	case "demo":
		err = demo(ctx, args, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "realroot", version)
	case "help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "realroot: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintln(stderr, "realroot:", err)
		return 2
	}
	fmt.Fprintln(stderr, "realroot:", err)
	return 1
}

// usageError is a configuration error: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func isFlag(s string) bool { return len(s) > 0 && s[0] == '-' }

func usage(w io.Writer) {
	fmt.Fprint(w, `realroot — a front server for PHP-FPM with symlink-switched releases

Usage:
  realroot [serve] --root DIR --fastcgi ADDR [flags]
  realroot demo [--listen ADDR]
  realroot version

Every flag --some-name can also be set as REALROOT_SOME_NAME.
Run 'realroot serve --help' for the flags.

Examples:
  realroot --root /srv/app/current/public --fastcgi unix:/run/php/php8.2-fpm.sock
  REALROOT_ROOT=/srv/app/current REALROOT_LISTEN=:8080 realroot
`)
}
