// Command realroot is a front server for PHP-FPM that serves a symlinked
// docroot (current -> releases/N) with every request pinned to one release.
//
// Usage:
//
//	realroot [serve] [OPTIONS] [-- PHP-FPM-COMMAND...]
//	realroot check [OPTIONS]
//	realroot switch RELEASE_DIR [--link PATH] [--wait --admin ADDR]
//	realroot releases [--link PATH] [--admin ADDR] [--prune [--keep N]]
//	realroot version
//	realroot demo
//
// realroot --help prints the manual.
package main

import (
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
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, sigs))
}

// isStop reports whether sig stops realroot gracefully: SIGTERM, SIGINT, or
// SIGQUIT, the graceful stop of nginx and php-fpm and the STOPSIGNAL of the
// php:*-fpm images, which docker stop and Kubernetes send.
func isStop(sig os.Signal) bool {
	return sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT
}

// run is main with its world passed in; it returns the exit status. sigs
// delivers the signals realroot handles.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	cmd := "serve"
	switch {
	case len(args) > 0 && args[0] == "--version":
		cmd, args = "version", args[1:]
	case len(args) > 0 && !isFlag(args[0]):
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(args, getenv, stdout, stderr, sigs)
	case "check":
		err = check(args, getenv, stdout, sigs)
	case "switch":
		err = switchRelease(args, getenv, stdout, stderr, sigs)
	case "releases":
		err = listReleases(args, getenv, stdout, stderr, sigs)
	case "demo":
		err = demo(args, stdout, stderr, sigs)
	case "version":
		fmt.Fprintln(stdout, "realroot", version)
	case "help":
		manual(stdout)
	default:
		fmt.Fprintf(stderr, "realroot: unknown command %q\nRun 'realroot --help' for the manual.\n", cmd)
		return 2
	}
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		if cmd == "demo" {
			return 0 // the demo's flag set printed its own usage
		}
		manual(stdout)
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, new(*usageError)):
		fmt.Fprintln(stderr, "realroot:", err)
		if cmd == "switch" || cmd == "releases" {
			fmt.Fprintf(stderr, "Run 'realroot %s --help' for its usage.\n", cmd)
		} else {
			fmt.Fprintln(stderr, "Run 'realroot --help' for the manual.")
		}
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
