package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/yookoala/gofast"
	"go.uber.org/zap"

	"realroot/resolve"
)

// WarmupParam is the FastCGI param, "1", that marks a warm-up request: PHP
// sees $_SERVER['REALROOT_WARMUP']. A client cannot send it, since request
// headers only ever become HTTP_* params.
const WarmupParam = "REALROOT_WARMUP"

// Warm requests each of paths (URL paths with an optional query, e.g.
// "/" or "/health.php?deep=1") from rel before it gets traffic, so that
// php-fpm compiles the release's scripts into OPcache and fills its realpath
// cache with rel's paths. Each path is routed exactly as a client's GET
// (index, front controller, PATH_INFO) and run through php-fpm with rel's
// realpaths, plus the WarmupParam; the body is discarded. Paths that route
// to a static file are not requested.
//
// Warm returns an error naming every path that failed: no script to route
// to (404, 403), a redirect, a status other than 2xx, a failed exchange, or
// ctx done. It is meant for resolve.Options.Prepare; the release must not be
// pinned by requests yet, so Warm does not pin it.
func (h *Handler) Warm(ctx context.Context, rel *resolve.Release, paths []string) error {
	var errs []error
	for _, p := range paths {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("warm %s: %w", p, context.Cause(ctx)))
			break
		}
		if err := h.warm(ctx, rel, p); err != nil {
			errs = append(errs, fmt.Errorf("warm %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// warm runs one warm-up request.
func (h *Handler) warm(ctx context.Context, rel *resolve.Release, target string) error {
	host := h.opts.ServerName
	if host == "" {
		host = "localhost"
	}
	if !strings.HasPrefix(target, "/") {
		return fmt.Errorf("%w: does not start with /", resolve.ErrBadPath)
	}
	// The target alone is parsed, as a client's: server-name need not be a
	// URL host (an IPv6 literal has no brackets there).
	path, _, _ := strings.Cut(target, "#") // nginx's end of the target, as serve's
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return fmt.Errorf("%w: %w", resolve.ErrBadPath, err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return err
	}
	r.URL, r.Host, r.RequestURI = u, host, target
	r.RemoteAddr = "127.0.0.1"
	r.Header.Set("User-Agent", "realroot-warmup")

	x := exchange{start: time.Now(), rel: rel, ids: &h.ids, req: r}
	p, err := resolve.CleanPath(r.URL.Path)
	if err != nil {
		return err
	}
	if x.route, err = h.route(rel, p); err != nil {
		return err
	}
	switch x.route.kind {
	case kindStatic:
		return nil
	case kindRedirect:
		return fmt.Errorf("redirects to %s", x.route.name)
	}

	req := &gofast.Request{Role: gofast.RoleResponder, Params: make(map[string]string, 48), Raw: r}
	h.routeParams(req.Params, r, &x, nil)
	h.params(nil, req)
	req.Params[WarmupParam] = "1"
	resp, err := h.upstream.Do(ctx, req)
	if err != nil {
		return err
	}
	defer h.logStderr(r, &x, resp.Stderr) // after Close: stderr is complete
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.Status < 200 || resp.Status > 299 {
		return fmt.Errorf("status %d", resp.Status)
	}
	if ce := h.log.Check(zap.DebugLevel, "warm-up request"); ce != nil {
		ce.Write(
			zap.String("uri", target),
			zap.String("script", x.route.name),
			zap.Int("status", resp.Status),
			zap.Duration("duration", time.Since(x.start)),
			zap.String("release", rel.Root),
			zap.String("request_id", x.requestID()))
	}
	return nil
}
