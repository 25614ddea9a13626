// Package h1 is a lean HTTP/1.1 server for an http.Handler, for plain
// (non-TLS) listeners. It keeps net/http's rules for parsing, framing,
// keep-alive, Expect: 100-continue, body draining and shutdown, but not its
// per-request machinery: no background read goroutine per request, no
// deadline calls per request in the common case, no header sorting, and
// pooled per-connection state. TLS and HTTP/2 stay on net/http.
//
// What it does not do: Hijack, trailers, EnableFullDuplex, HTTP/2 (h2c or
// "PRI *" upgrades get a 505), ConnState hooks, ReadTimeout/WriteTimeout
// (handlers use http.ResponseController deadlines instead).
package h1

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// defaultMaxHeaderBytes bounds a request's line and headers when
// Server.MaxHeaderBytes is 0.
const defaultMaxHeaderBytes = 64 << 10

// Server serves HTTP/1.x on the listeners given to Serve. Its fields must
// not change once Serve has been called.
type Server struct {
	// Handler answers every request. It must be set.
	Handler http.Handler
	// ReadHeaderTimeout bounds the reading of a request's line and headers,
	// from its first byte (from the accept for a connection's first
	// request, as net/http). 0: no limit, but IdleTimeout for a new
	// connection's first byte.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept
	// connection. 0: ReadHeaderTimeout; both 0: no limit. The deadline is
	// re-armed lazily, so the effective wait is between IdleTimeout less
	// min(IdleTimeout/16, 1s) and IdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers (plus 4 KiB of
	// read buffer, as in net/http). 0: 64 KiB. Past it: 431 and close.
	MaxHeaderBytes int
	// ErrorLog receives handler panics, accept errors and handler
	// misuse. nil: nothing is logged.
	ErrorLog *zap.Logger
	// Rejected, if set, is told of each request the server answers itself,
	// without the handler: one it could not read (400, 431, 501) and one
	// whose Expect it does not know (417). A client that went away or was
	// too slow before its request was whole is not a request. bytes is the
	// length of the answer's body. It runs on the connection's goroutine,
	// after the answer was written.
	Rejected func(remoteAddr string, status int, reason string, bytes int)

	inShutdown atomic.Bool
	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	serving    sync.WaitGroup // Serve loops, so that Shutdown sees every accepted conn
	conns      map[*conn]struct{}
	drained    chan struct{} // closed when conns empties during Shutdown
}

// newConnGrace is how long Shutdown lets a new connection send its first
// request (net/http's 5 seconds, issue 22682): its client sent it, or is
// about to, and will not retry on a fresh connection. A var for tests.
var newConnGrace = 5 * time.Second

// shutdownPoll is how often Shutdown looks again at new connections.
const shutdownPoll = 500 * time.Millisecond

// Serve accepts connections on ln and serves each in its own goroutine. It
// returns http.ErrServerClosed after Shutdown or Close, else the accept
// error. ln is closed when Serve returns.
func (s *Server) Serve(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		ln.Close()
		return http.ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	defer ln.Close()
	var delay time.Duration // accept backoff, as net/http
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as net/http: EMFILE and the like
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Error("accept", zap.Error(err), zap.Duration("retry_in", delay))
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := newConn(s, rwc)
		s.trackConn(c, true)
		go c.serve()
	}
}

// Shutdown stops the listeners, closes idle connections at once, and
// waits for active requests to finish; a connection closes as soon as its
// request is answered. A new connection (no request yet) is given
// newConnGrace from its accept to send one, as net/http does. It returns
// ctx.Err() if that takes longer than ctx allows (the connections are then
// left to finish on their own).
func (s *Server) Shutdown(ctx context.Context) error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	err := s.closeListenersLocked()
	s.mu.Unlock()
	s.serving.Wait() // a conn accepted before the close is tracked now
	var poll *time.Timer
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	for {
		s.mu.Lock()
		now := time.Now()
		young := false
		for c := range s.conns {
			if !c.closeIfIdle(now) && c.state.Load() == stateNew {
				young = true
			}
		}
		if len(s.conns) == 0 {
			s.mu.Unlock()
			return err
		}
		if s.drained == nil {
			s.drained = make(chan struct{})
		}
		ch := s.drained
		s.mu.Unlock()
		var tick <-chan time.Time
		if young {
			if poll == nil {
				poll = time.NewTimer(shutdownPoll)
			} else {
				poll.Reset(shutdownPoll)
			}
			tick = poll.C
		}
		select {
		case <-ch:
		case <-tick:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops the listeners and closes every connection now, active or
// not. Handlers still running see their writes fail and r.Context() done.
func (s *Server) Close() error {
	s.inShutdown.Store(true)
	s.mu.Lock()
	err := s.closeListenersLocked()
	s.mu.Unlock()
	s.serving.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.rwc.Close()
	}
	return err
}

func (s *Server) closeListenersLocked() error {
	var err error
	for ln := range s.listeners {
		if cerr := (*ln).Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	clear(s.listeners)
	return err
}

// trackListener adds or removes ln; adding fails once shutting down.
func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, ln)
		s.serving.Done()
		return true
	}
	if s.inShutdown.Load() {
		return false
	}
	if s.listeners == nil {
		s.listeners = make(map[*net.Listener]struct{})
	}
	s.listeners[ln] = struct{}{}
	s.serving.Add(1)
	return true
}

// trackConn adds or removes c. Removing the last connection during
// Shutdown wakes it. Adding is done by a Serve loop, which Shutdown and
// Close wait for: they see every connection it accepted.
func (s *Server) trackConn(c *conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		if len(s.conns) == 0 && s.drained != nil {
			close(s.drained)
			s.drained = nil
		}
		return
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
}

func (s *Server) maxHeaderBytes() int64 {
	if s.MaxHeaderBytes > 0 {
		return int64(s.MaxHeaderBytes)
	}
	return defaultMaxHeaderBytes
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return s.ReadHeaderTimeout
}

var nopLogger = zap.NewNop()

func (s *Server) logger() *zap.Logger {
	if s.ErrorLog != nil {
		return s.ErrorLog
	}
	return nopLogger
}
