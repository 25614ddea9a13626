package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"realroot/proxy/admin"
	"realroot/resolve"
)

// The client side of the admin API: switch --wait and releases ask the
// running server.

// adminBase turns an --admin value (host:port, :port or a URL) into the
// base URL of the admin API.
func adminBase(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/"), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin: %q is not host:port or a URL", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// fetchStatus asks the admin API at base for its /status.
func fetchStatus(ctx context.Context, base string) (admin.Status, error) {
	var s admin.Status
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/status", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("ask %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return s, fmt.Errorf("ask %s: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("ask %s/status: %s", base, resp.Status)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("ask %s/status: %w", base, err)
	}
	return s, nil
}

// inRelease reports whether info is a generation of the release directory
// dir (a realpath).
func inRelease(info resolve.Info, dir string) bool {
	return info.Dir == dir || info.Root == dir || strings.HasPrefix(info.Root, dir+"/")
}

// parseArgs parses fs's flags wherever they are among args (realroot
// switch releases/B --wait) and returns the other arguments. Everything
// after "--" is an argument.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// signalContext returns a context cancelled when a stop signal arrives
// on sigs, and its stop function.
func signalContext(sigs <-chan os.Signal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			select {
			case sig := <-sigs:
				if isStop(sig) {
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, cancel
}
