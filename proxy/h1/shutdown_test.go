package h1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// serve starts s on 127.0.0.1 and returns its address and Serve's result.
func serve(t *testing.T, s *Server) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	return ln.Addr().String(), done
}

func TestShutdownWaitsForActiveRequests(t *testing.T) {
	started := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, r.URL.Path)
	})}
	addr, served := serve(t, s)
	idle := dial(t, addr)
	idle.send(get("a", "/idle"))
	idle.response("GET")
	slow := dial(t, addr)
	slow.send(get("a", "/slow"))
	<-started

	start := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	if !idle.closed(100 * time.Millisecond) {
		t.Error("idle connection not closed at once")
	}
	if res, body := slow.response("GET"); res.StatusCode != 200 || body != "/slow" || !res.Close {
		t.Errorf("in-flight request: got %d %q close=%v; want 200 /slow, close", res.StatusCode, body, res.Close)
	}
	if err := <-shut; err != nil || time.Since(start) < 250*time.Millisecond {
		t.Errorf("Shutdown: %v after %v; want nil after the slow request", err, time.Since(start))
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v; want http.ErrServerClosed", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("listener still accepts")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v; want http.ErrServerClosed", err)
	}
}

func TestShutdownTimeout(t *testing.T) {
	release := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })}
	addr, served := serve(t, s)
	c := dial(t, addr)
	c.send(get("a", "/"))
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v; want context.DeadlineExceeded", err)
	}
	close(release)
	if res, _ := c.response("GET"); res.StatusCode != 200 {
		t.Errorf("got %d; want 200", res.StatusCode)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	<-served
}

func TestClose(t *testing.T) {
	ctxDone := make(chan struct{})
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(ctxDone)
	})}
	addr, served := serve(t, s)
	c := dial(t, addr)
	c.send(get("a", "/"))
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // past watchDelay
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Error("response read to a clean end after Close")
	}
	select {
	case <-ctxDone:
	case <-time.After(2 * time.Second):
		t.Error("r.Context() not done after Close")
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v; want http.ErrServerClosed", err)
	}
}
