package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy/h1"
)

// serve runs realroot with the configuration from args and the environment,
// and php-fpm as its child when args end with -- and a command.
func serve(args []string, getenv func(string) string, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
	c, argv, err := loadConfig(args, getenv)
	if err != nil {
		return err
	}
	logs, err := newLogs(c, stderr)
	if err != nil {
		return err
	}
	defer logs.close()
	d := &daemon{
		cfg:  c,
		logs: logs,
		log:  logs.main,
		reload: func() (conf.Config, error) {
			c, _, err := loadConfig(args, getenv)
			return c, err
		},
	}
	return d.run(argv, stdout, stderr, sigs, nil)
}

// loadConfig loads and validates the configuration. It returns the child
// command given after "--", if any.
func loadConfig(args []string, getenv func(string) string) (conf.Config, []string, error) {
	c, rest, err := conf.Load(args, getenv)
	if err != nil {
		return c, nil, &usageError{err}
	}
	if len(rest) > 0 && (len(args) == len(rest) || args[len(args)-len(rest)-1] != "--") {
		return c, nil, &usageError{fmt.Errorf("unexpected arguments %q (put -- before a php-fpm command)", rest)}
	}
	if len(rest) > 0 && c.ManagedPool != "" {
		return c, nil, &usageError{errors.New("managed-pool: not with -- PHP-FPM-COMMAND: in managed mode realroot starts php-fpm itself, once per release")}
	}
	if err := validate(&c); err != nil {
		return c, nil, &usageError{err}
	}
	return c, rest, nil
}

// validate is c.Validate plus the rule that is cmd's: the admin API listens
// on loopback unless admin-allow-remote.
func validate(c *conf.Config) error {
	err := c.Validate()
	if _, _, serr := net.SplitHostPort(c.Admin); c.Admin != "" && serr == nil {
		err = errors.Join(err, checkAdminAddr(c.Admin, c.AdminAllowRemote))
	}
	return err
}

// daemon is one run of the server: its listeners, its generations, its
// php-fpm child if any, and the signals that drive them.
type daemon struct {
	cfg    conf.Config // as started; listen and the logs' files stay so
	logs   *logs
	log    *zap.Logger
	reload func() (conf.Config, error)
	front  *frontend // TLS, HTTP/2, the PROXY protocol, the redirect to HTTPS
}

// exitCode is an exit status to return without printing anything more: the
// log already says why.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run serves until SIGTERM, SIGINT or SIGQUIT (or php-fpm's death), then
// drains.
// With argv, it starts php-fpm first and waits until it accepts. ready, if
// not nil, gets the listeners' addresses once they accept.
func (d *daemon) run(argv []string, stdout, stderr io.Writer, sigs <-chan os.Signal, ready func([]net.Addr)) error {
	fe, err := newFrontend(d.cfg, d.log) // before php-fpm: a bad certificate fails fast
	if err != nil {
		return err
	}
	d.front = fe
	var r *reaper
	if os.Getpid() == 1 {
		r = startReaper(d.log.Named("reaper"))
		defer r.stop()
	}
	var ch *child
	var childDone <-chan struct{} // nil (never ready) without a child
	var pending []os.Signal       // received while php-fpm started
	if len(argv) > 0 {
		var err error
		if ch, err = startChild(argv, stdout, stderr, r, d.log.Named("php-fpm")); err != nil {
			return err
		}
		childDone = ch.done
		if pending, err = d.waitChild(ch, sigs); err != nil {
			return err
		}
	}

	srv, pending, err := d.startServer(r, sigs, pending)
	if err != nil || srv == nil { // nil: a stop signal came first
		d.stopChild(ch)
		if err == nil && ch != nil {
			err = exitCode(ch.exitCode())
		}
		return err
	}
	var lns []net.Listener
	for _, addr := range d.cfg.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			srv.close(context.Background())
			d.stopChild(ch)
			return fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, fe.wrap(ln))
	}
	var adm *adminListener
	err = fe.startRedirect(lns[0].Addr())
	if err == nil && d.cfg.Admin != "" {
		adm, err = startAdmin(d.cfg, srv, d.log.Named("admin"))
	}
	if err != nil {
		fe.stop(context.Background())
		for _, l := range lns {
			l.Close()
		}
		srv.close(context.Background())
		d.stopChild(ch)
		return err
	}
	errLog := httpErrorLog(d.log.Named("http"))
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: d.cfg.HeaderTimeout,
		IdleTimeout:       d.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}
	fe.configure(hs)
	var hsrv httpServer = hs
	http1 := "net/http"
	if d.cfg.HTTP1Server == "lean" && fe.tls == nil && !fe.h2c {
		http1 = "lean"
		hsrv = &h1.Server{
			Handler:           srv,
			ReadHeaderTimeout: d.cfg.HeaderTimeout,
			IdleTimeout:       d.cfg.IdleTimeout,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          d.log.Named("http"),
			Rejected:          srv.rejected,
		}
	}
	// Signals that came while php-fpm started, before the first request.
	for _, sig := range pending {
		if sig == syscall.SIGHUP {
			// php-fpm read its configuration as it started: only
			// realroot's is read again (a SIGUSR2 now could land while
			// php-fpm re-executes itself, and kill it).
			d.reloadConfig(srv)
			continue
		}
		d.signal(sig, srv, ch)
	}
	serveErr := make(chan error, len(lns))
	addrs := make([]net.Addr, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr()
		go func() {
			if err := hsrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	fields := []zap.Field{
		zap.Strings("listen", addrStrings(addrs)),
		zap.String("root", d.cfg.Root),
		zap.String("release", srv.cur.Load().root.rs.Current().Root),
		fastcgiField(d.cfg),
		zap.String("config", d.cfg.File),
		zap.String("version", version),
		zap.String("http1_server", http1),
	}
	if adm != nil {
		fields = append(fields, zap.Stringer("admin", adm.addr))
	}
	fields = append(fields, fe.fields()...)
	d.log.Info("serving", fields...)
	if ready != nil {
		ready(addrs)
	}

	var result error
loop:
	for {
		select {
		case sig := <-sigs:
			if isStop(sig) {
				d.log.Info("signal received; draining", zap.Stringer("signal", sig))
				break loop
			}
			d.signal(sig, srv, ch)
		case <-childDone:
			d.log.Error("php-fpm exited; draining", zap.Int("status", ch.exitCode()))
			result = exitCode(ch.exitCode())
			break loop
		case err := <-serveErr:
			d.log.Error("serving stopped; draining", zap.Error(err))
			result = err
			break loop
		}
	}
	return d.drain(hsrv, adm, srv, ch, sigs, result)
}

// shutdownGrace bounds the wait for watchers after the server stopped.
const shutdownGrace = 5 * time.Second

// drain stops accepting, lets in-flight requests finish with a fresh
// context (a second stop signal cuts the wait short), stops the
// generations (closing every FastCGI client), then the admin listener (nil:
// none), waits for on-drain commands, and stops php-fpm. It returns result,
// or php-fpm's status when that is not 0.
func (d *daemon) drain(hsrv httpServer, adm *adminListener, srv *server, ch *child, sigs <-chan os.Signal, result error) error {
	timeout := srv.config().ShutdownTimeout
	d.log.Info("shutting down", zap.Duration("timeout", timeout))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		for {
			select {
			case sig := <-sigs:
				if isStop(sig) {
					d.log.Warn("second signal; closing connections", zap.Stringer("signal", sig))
					cancel()
					return
				}
			case <-stopped:
				return
			}
		}
	}()
	srv.stopping.Store(true) // /readyz: 503 from now on
	// The redirect to HTTPS stops accepting with the listen addresses, not
	// once their requests are done.
	frontStopped := make(chan struct{})
	go func() {
		defer close(frontStopped)
		d.front.stop(ctx)
	}()
	if err := hsrv.Shutdown(ctx); err != nil {
		d.log.Warn("in-flight requests cut short; closing connections", zap.Error(err))
		hsrv.Close()
	}
	<-frontStopped
	gctx, gcancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer gcancel()
	if err := srv.close(gctx); err != nil {
		d.log.Warn("stopping", zap.Error(err))
	}
	if adm != nil {
		adm.stop() // after the drain: switch --wait asks it meanwhile
	}
	if srv.drain != nil {
		srv.drain.Close() // each command is bounded by on-drain-timeout
	}
	if ch != nil {
		d.stopChild(ch)
		if result == nil && ch.exitCode() != 0 {
			result = exitCode(ch.exitCode())
		}
	}
	d.log.Info("stopped")
	return result
}

// startServer is newServer, which in managed mode waits for the current
// release's pool to answer. A stop signal (isStop) meanwhile cancels that
// start and returns no server; the other signals are added to pending,
// for run to handle once serving.
func (d *daemon) startServer(r *reaper, sigs <-chan os.Signal, pending []os.Signal) (*server, []os.Signal, error) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	type result struct {
		srv *server
		err error
	}
	done := make(chan result, 1)
	go func() {
		srv, err := newServer(ctx, d.cfg, d.logs, r)
		done <- result{srv, err}
	}()
	stop := false
	for {
		select {
		case res := <-done:
			if !stop {
				return res.srv, pending, res.err
			}
			if res.srv != nil {
				res.srv.close(context.Background())
			}
			return nil, nil, nil
		case sig := <-sigs:
			switch {
			case isStop(sig) && !stop:
				d.log.Info("signal received while starting; stopping", zap.Stringer("signal", sig))
				stop = true
				cancel(errShuttingDown)
			case !isStop(sig):
				pending = append(pending, sig)
			}
		}
	}
}

// waitChild waits until php-fpm accepts on every fastcgi address. A stop
// signal (isStop) meanwhile stops it; the other signals are returned, for run to
// handle once serving. It returns an error when realroot must stop.
func (d *daemon) waitChild(ch *child, sigs <-chan os.Signal) (pending []os.Signal, err error) {
	var addrs [][2]string
	for _, a := range d.cfg.FastCGI {
		network, address, _ := conf.ParseFastCGI(a)
		addrs = append(addrs, [2]string{network, address})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readyc := make(chan error, 1)
	go func() { readyc <- ch.waitReady(ctx, addrs) }()
	for {
		select {
		case err := <-readyc:
			if err != nil {
				d.log.Error("php-fpm did not start", zap.Error(err))
				d.stopChild(ch)
				return nil, exitCode(ch.exitCode())
			}
			return pending, nil
		case sig := <-sigs:
			switch {
			case isStop(sig):
				d.log.Info("signal received while php-fpm starts; stopping", zap.Stringer("signal", sig))
				cancel()
				<-readyc
				d.stopChild(ch)
				return nil, exitCode(ch.exitCode())
			default:
				// Handled once php-fpm accepts: it installs its signal
				// handlers late in its start, and until then SIGUSR2
				// kills it; realroot's own reload needs the server.
				if !slices.Contains(pending, sig) {
					pending = append(pending, sig)
				}
			}
		}
	}
}

// signal handles a signal other than a stop signal while serving.
func (d *daemon) signal(sig os.Signal, srv *server, ch *child) {
	switch sig {
	case syscall.SIGHUP:
		d.reloadConfig(srv)
		if ch != nil {
			ch.signal(syscall.SIGUSR2) // php-fpm's graceful reload
		}
	case syscall.SIGUSR2:
		if ch != nil {
			ch.signal(syscall.SIGUSR2)
		}
	case syscall.SIGUSR1:
		if err := d.logs.reopen(); err != nil {
			d.log.Error("reopening log files", zap.Error(err))
		}
		if ch != nil {
			ch.signal(syscall.SIGUSR1) // php-fpm reopens its logs
		}
		if srv.pools != nil {
			srv.pools.signal(syscall.SIGUSR1)
		}
	}
}

// stopChild stops php-fpm gracefully, if there is one.
func (d *daemon) stopChild(ch *child) {
	if ch == nil {
		return
	}
	ch.stop(max(d.cfg.ShutdownTimeout, 5*time.Second))
	d.log.Info("php-fpm stopped", zap.Int("status", ch.exitCode()))
}

func addrStrings(addrs []net.Addr) []string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return s
}

// fastcgiField names where PHP requests go, for the serving log line.
func fastcgiField(c conf.Config) zap.Field {
	if c.ManagedPool != "" {
		return zap.String("managed_pool", c.ManagedPool)
	}
	return zap.Strings("fastcgi", c.FastCGI)
}

// httpServer is what serves the listen addresses: *http.Server, or
// *h1.Server for plain HTTP/1.x with http1-server = lean.
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}
