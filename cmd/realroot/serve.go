package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"realroot/conf"
	"realroot/proxy"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// serve runs the server until ctx is done, then shuts down gracefully.
func serve(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	c, rest, err := conf.Load(args, getenv, stderr)
	if err != nil {
		return &usageError{err}
	}
	if len(rest) > 0 {
		return &usageError{fmt.Errorf("unexpected arguments %q", rest)}
	}
	if err := c.Validate(); err != nil {
		return &usageError{err}
	}
	logger, access, err := newLoggers(c, stderr)
	if err != nil {
		return err
	}
	defer logger.Sync()
	return runServer(ctx, c, logger, access, nil)
}

// newLoggers returns the main logger and the access logger (nil when off).
// The access logger never samples: every request gets its line.
func newLoggers(c conf.Config, w io.Writer) (*zap.Logger, *zap.Logger, error) {
	level, err := zapcore.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, nil, &usageError{fmt.Errorf("log-level: %w", err)}
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.TimeKey = "time"
	ws := zapcore.Lock(zapcore.AddSync(w))
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, level))
	var access *zap.Logger
	if c.AccessLog == "json" {
		access = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, zapcore.InfoLevel)).Named("access")
	}
	return logger, access, nil
}

// runServer serves c until ctx is done. ready, if not nil, gets the bound
// listener addresses once they accept.
func runServer(ctx context.Context, c conf.Config, logger, access *zap.Logger, ready func([]net.Addr)) error {
	rs, err := resolve.New(resolve.Options{
		Root:         c.Root,
		PollInterval: c.PollInterval,
		Logger:       logger.Named("resolve"),
	})
	if err != nil {
		return err
	}
	network, address, _ := c.FastCGIAddr()
	client := &fcgi.Client{
		Network:      network,
		Address:      address,
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  c.ReadTimeout,
		WriteTimeout: c.WriteTimeout,
	}
	h := proxy.New(rs, client, proxy.Options{
		Index:           c.Index,
		FrontController: c.FrontControllerScript(),
		PHPExtensions:   c.PHPExtensions,
		ServerName:      c.ServerName,
		ServerSoftware:  "realroot/" + version,
		MaxBodySize:     maxBody(c.MaxBodySize),
		Params:          c.Params,
		Deny:            c.Deny,
		Logger:          logger.Named("proxy"),
		AccessLog:       access,
	})

	var lns []net.Listener
	for _, addr := range c.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
	}
	errLog, _ := zap.NewStdLogAt(logger.Named("http"), zap.WarnLevel)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.HeaderTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          errLog,
	}

	watchCtx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := rs.Run(watchCtx); err != nil {
			logger.Error("watching the root stopped", zap.Error(err))
		}
	}()

	serveErr := make(chan error, len(lns))
	addrs := make([]net.Addr, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	cur := rs.Current()
	logger.Info("serving",
		zap.Strings("listen", addrStrings(addrs)),
		zap.String("root", c.Root),
		zap.String("release", cur.Root),
		zap.String("fastcgi", c.FastCGI),
		zap.String("version", version))
	if ready != nil {
		ready(addrs)
	}

	var err2 error
	select {
	case <-ctx.Done():
	case err2 = <-serveErr:
		logger.Error("serving stopped", zap.Error(err2))
	}
	// Stop accepting, then let in-flight requests finish, with a fresh
	// context: ctx is already done.
	logger.Info("shutting down", zap.Duration("timeout", c.ShutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("shutdown timed out; closing connections", zap.Error(err))
		srv.Close()
	}
	stopWatch()
	wg.Wait()
	logger.Info("stopped")
	return err2
}

// maxBody maps the configuration's 0 (no limit) to proxy's negative.
func maxBody(s conf.Size) int64 {
	if s == 0 {
		return -1
	}
	return int64(s)
}

func addrStrings(addrs []net.Addr) []string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return s
}
