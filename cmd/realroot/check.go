package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"realroot/conf"
	"realroot/proxy"
	"realroot/resolve"
)

// check validates the configuration, resolves the root and runs one
// FastCGI request on every php-fpm address, printing one line per step:
// "STEP: ok (detail)" or "STEP: failed: reason". Any failure makes it exit 1.
func check(args []string, getenv func(string) string, stdout io.Writer, sigs <-chan os.Signal) error {
	c, rest, err := conf.Load(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	r := &report{w: stdout}
	label := "config"
	if c.File != "" {
		label = "config " + c.File
	}
	if err == nil && len(rest) > 0 && args[len(args)-len(rest)-1] != "--" {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	if err != nil {
		r.step(label, "", err)
		return exitCode(1)
	}
	// Arguments after -- (a php-fpm command, as for serve) are ignored, so
	// that a container's probe can repeat its entrypoint's arguments.
	r.step(label, "", validate(&c))

	ctx, cancel := context.WithTimeout(context.Background(), c.DialTimeout+min(c.ReadTimeout, 10*time.Second))
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	docroot := c.Root
	var rel *resolve.Release
	if c.Root == "" || !filepath.IsAbs(c.Root) {
		r.skip("root", "invalid")
	} else {
		rs, err := resolve.New(resolve.Options{Root: c.Root})
		detail := ""
		if err == nil {
			rel = rs.Current()
			docroot = rel.Root
			detail = "release " + docroot
		}
		r.step("root "+c.Root, detail, err)
	}
	if len(c.TLSCert) > 0 {
		set, err := loadCerts(c.TLSCert, c.TLSKey)
		r.step("tls", set.describe(), err)
	}
	if c.ManagedPool != "" { // no pool runs here: php-fpm tests the configuration
		if rel == nil {
			r.skip("managed-pool "+c.ManagedPool, "the root does not resolve")
		} else {
			detail, err := checkManagedPool(ctx, c, rel)
			r.step("managed-pool "+c.ManagedPool, detail, err)
		}
		c.FastCGI = nil
	}
	for _, a := range c.FastCGI {
		network, address, err := conf.ParseFastCGI(a)
		if err != nil {
			r.skip("fastcgi "+a, "invalid")
			continue
		}
		detail, err := askFastCGI(ctx, network, address, c, docroot)
		r.step("fastcgi "+a, detail, err)
	}
	if r.failed {
		return exitCode(1)
	}
	return nil
}

// report prints check's steps.
type report struct {
	w      io.Writer
	failed bool
}

func (r *report) step(name, detail string, err error) {
	switch {
	case err != nil:
		r.failed = true
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			msg = "\n    " + strings.ReplaceAll(msg, "\n", "\n    ")
		} else {
			msg = " " + msg
		}
		fmt.Fprintf(r.w, "%s: failed:%s\n", name, msg)
	case detail != "":
		fmt.Fprintf(r.w, "%s: ok (%s)\n", name, detail)
	default:
		fmt.Fprintf(r.w, "%s: ok\n", name)
	}
}

func (r *report) skip(name, why string) {
	r.failed = true
	fmt.Fprintf(r.w, "%s: skipped (%s)\n", name, why)
}

// missingScript is the script check asks for without a ping path: php-fpm
// answers "File not found." with status 404, which proves it answers.
const missingScript = "/.realroot-check-missing.php"

// askFastCGI runs one request on php-fpm: its ping path when c has one
// (the answer must be 200), else a missing script (any answer will do).
func askFastCGI(ctx context.Context, network, address string, c conf.Config, docroot string) (string, error) {
	client := newClient(network, address, c)
	client.MaxConns, client.DisableKeepAlive = 1, true
	defer client.Close()

	script, filename := c.PingPath, c.PingPath
	if script == "" {
		script, filename = missingScript, filepath.Join(docroot, missingScript)
	}
	req := proxy.ProbeRequest(script, filename, docroot, "realroot-check")
	resp, err := client.Do(ctx, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if c.PingPath == "" {
		return fmt.Sprintf("php-fpm answered %d for a missing script", resp.Status), nil
	}
	if resp.Status != http.StatusOK {
		return "", fmt.Errorf("ping %s answered %d; is ping.path = %s set in php-fpm's pool?", c.PingPath, resp.Status, c.PingPath)
	}
	return fmt.Sprintf("ping %s: %d %s", c.PingPath, resp.Status, strings.TrimSpace(string(body))), nil
}
