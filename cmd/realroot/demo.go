package main

import (
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"realroot/conf"
)

//go:embed demosite
var demoSite embed.FS

// demoReleases are the two releases the demo creates; current points at the
// first.
var demoReleases = []string{"20261121120000", "20261122120000"}

// demo creates a two-release site behind a current symlink, starts a private
// php-fpm for it as realroot's child and serves it.
func demo(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
	fs := flag.NewFlagSet("realroot demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to serve on")
	dir := fs.String("dir", "", "where to create the site (default: a new temp dir)")
	fpm := fs.String("php-fpm", "", "php-fpm binary (default: php-fpm8.2 or php-fpm from PATH)")
	if err := fs.Parse(args); err != nil {
		return &usageError{err}
	}
	if *dir != "" {
		// The root and the socket must be absolute: --dir site is ./site.
		d, err := filepath.Abs(*dir)
		if err != nil {
			return err
		}
		*dir = d
	} else {
		d, err := os.MkdirTemp("", "realroot-demo-")
		if err != nil {
			return err
		}
		*dir = d
		defer os.RemoveAll(d) // a site we made up is gone with the demo
	}
	if err := writeDemoSite(*dir); err != nil {
		return fmt.Errorf("demo site: %w", err)
	}
	bin, err := findPHPFPM(*fpm)
	if err != nil {
		return err
	}
	sock := filepath.Join(*dir, "php-fpm.sock")
	argv, err := demoFPMCommand(bin, *dir, sock)
	if err != nil {
		return err
	}

	c := conf.Default()
	c.Root = filepath.Join(*dir, "current", "public")
	c.FastCGI = []string{"unix:" + sock}
	c.Listen = []string{*listen}
	c.MaxConns = 4 // the pool's pm.max_children
	if err := c.Validate(); err != nil {
		return &usageError{err}
	}
	logs, err := newLogs(c, stderr)
	if err != nil {
		return err
	}
	defer logs.close()
	d := &daemon{cfg: c, logs: logs, log: logs.main, reload: func() (conf.Config, error) { return c, nil }}
	rel := func(name string) string { return filepath.Join(*dir, "releases", name) }
	err = d.run(argv, stderr, stderr, sigs, func(addrs []net.Addr) {
		fmt.Fprintf(stdout, `
realroot demo: http://%s/
  site:    %s   (current -> releases/%s)
  switch:  ln -s %s %s/current.tmp && mv -T %s/current.tmp %s/current
  back:    ln -sfn %s %s/current
Stop with Ctrl-C.

`, addrs[0], *dir, demoReleases[0],
			rel(demoReleases[1]), *dir, *dir, *dir,
			rel(demoReleases[0]), *dir)
	})
	if errors.Is(err, syscall.EADDRINUSE) {
		// make demo always asks for the default address.
		return fmt.Errorf("%w: pass --listen 127.0.0.1:PORT (make demo DEMO_FLAGS=--listen=127.0.0.1:PORT)", err)
	}
	return err
}

// writeDemoSite writes every release and points current at the first.
func writeDemoSite(dir string) error {
	for _, name := range demoReleases {
		root := filepath.Join(dir, "releases", name)
		err := fs.WalkDir(demoSite, "demosite", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			dst := filepath.Join(root, strings.TrimPrefix(p, "demosite"))
			if d.IsDir() {
				return os.MkdirAll(dst, 0o755)
			}
			b, err := demoSite.ReadFile(p)
			if err != nil {
				return err
			}
			b = []byte(strings.ReplaceAll(string(b), "{{RELEASE}}", name))
			return os.WriteFile(dst, b, 0o644)
		})
		if err != nil {
			return err
		}
	}
	link := filepath.Join(dir, "current")
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("releases", demoReleases[0]), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}

// findPHPFPM returns the php-fpm binary to run.
func findPHPFPM(bin string) (string, error) {
	if bin != "" {
		return exec.LookPath(bin)
	}
	for _, name := range []string{"php-fpm8.2", "/usr/sbin/php-fpm8.2", "php-fpm"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("php-fpm not found: install it with scripts/deps.sh (or pass --php-fpm)")
}

// demoFPMCommand writes a one-pool php-fpm config in dir listening on sock
// and returns the command that runs php-fpm with it in the foreground.
func demoFPMCommand(bin, dir, sock string) ([]string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "[global]\nerror_log = /proc/self/fd/2\ndaemonize = no\n\n[demo]\n")
	fmt.Fprintf(&b, "listen = %s\nlisten.mode = 0666\npm = static\npm.max_children = 4\n", sock)
	fmt.Fprintf(&b, "catch_workers_output = yes\ndecorate_workers_output = no\n")
	argv := []string{bin, "-F", "-y", filepath.Join(dir, "php-fpm.conf")}
	if os.Geteuid() == 0 {
		b.WriteString("user = root\ngroup = root\n")
		argv = append(argv, "-R") // php-fpm refuses root without it
	}
	if err := os.WriteFile(argv[3], []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	os.Remove(sock)
	return argv, nil
}
