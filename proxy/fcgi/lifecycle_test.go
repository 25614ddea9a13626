package fcgi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"realroot/internal/testutil"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

func TestCancel(t *testing.T) {
	t.Run("waiting for header", func(t *testing.T) {
		got := make(chan struct{})
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readRequest(); err != nil {
				return
			}
			close(got)
			hangUntilClosed(c)
		})
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-got; cancel() }()
		start := time.Now()
		_, err := c.Do(ctx, &gofast.Request{Params: baseParams("GET")})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v; want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v; want prompt", d)
		}
	})
	t.Run("reading body", func(t *testing.T) {
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readRequest(); err != nil {
				return
			}
			c.Write(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100))
			hangUntilClosed(c)
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := c.Do(ctx, &gofast.Request{Params: baseParams("GET")})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		buf := make([]byte, 10)
		if n, err := resp.Body.Read(buf); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v; want 1, nil", n, err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v; want context.Canceled", err)
		}
	})
	t.Run("streaming body", func(t *testing.T) {
		// The application reads the body only after the client was cancelled.
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readHead(); err != nil {
				return
			}
			hangUntilClosed(c)
		})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		stdin := &closeTracker{Reader: endless{}}
		_, err := c.Do(ctx, &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v; want context.Canceled", err)
		}
		if !stdin.isClosed() {
			t.Errorf("Stdin not closed")
		}
	})
	t.Run("before dial", func(t *testing.T) {
		c := startFake(t, hangUntilClosed)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Do(ctx, &gofast.Request{Params: baseParams("GET")}); !errors.Is(err, context.Canceled) {
			t.Errorf("got %v; want context.Canceled", err)
		}
	})
}

func TestClose(t *testing.T) {
	c := startFake(t, func(c *fakeConn) {
		if _, err := c.readHead(); err != nil {
			return
		}
		c.Write(appendStream(nil, typeStdout, "A: b\r\n\r\nxyz", 100))
		hangUntilClosed(c)
	})
	stdin := &closeTracker{Reader: endless{}}
	resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := resp.Body.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if !stdin.isClosed() {
		t.Errorf("Stdin not closed after Body.Close")
	}
	if n, err := resp.Body.Read(make([]byte, 10)); n != 0 || err == nil || err == io.EOF {
		t.Errorf("Read after Close = %d, %v; want 0 and an error", n, err)
	}
	if resp.Pending() {
		t.Errorf("Pending() after Close = true; want false")
	}
}

// TestPending runs an exchange over buffered records, without a connection.
func TestPending(t *testing.T) {
	var b []byte
	b = appendStream(b, typeStdout, "A: b\r\n\r\nfirst", 100)
	b = appendHeader(b, typeStdout, requestID, 6, 2)
	b = append(b, "second\x00\x00"...)
	b = appendStream(b, typeStderr, "err", 100)
	b = appendStream(b, typeStdout, "third", 100)
	b = appendEnd(b, 0, 0)
	x := &exchange{ctx: context.Background(), br: bufio.NewReader(bytes.NewReader(b)), stopCtx: func() bool { return true }}
	x.closeOnce.Do(func() {}) // no conn to close
	resp, err := x.readResponse(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	for _, want := range []struct {
		read    string
		pending bool
	}{
		{"", true},
		{"first", true},
		{"second", false}, // stderr next
		{"third", true},   // the end is buffered: Read returns io.EOF at once
	} {
		if want.read != "" {
			n, err := resp.Body.Read(buf)
			if string(buf[:n]) != want.read || err != nil {
				t.Fatalf("Read = %q, %v; want %q", buf[:n], err, want.read)
			}
		}
		if got := resp.Pending(); got != want.pending {
			t.Errorf("after %q: Pending() = %v; want %v", want.read, got, want.pending)
		}
	}
	if _, err := resp.Body.Read(buf); err != io.EOF {
		t.Errorf("Read = %v; want io.EOF", err)
	}
}
func TestCancelCause(t *testing.T) {
	c := startFake(t, hangUntilClosed)
	cause := errors.New("client went away")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(20*time.Millisecond, func() { cancel(cause) })
	_, err := c.Do(ctx, &gofast.Request{Params: baseParams("GET")})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, cause) {
		t.Errorf("got %v; want context.Canceled and its cause", err)
	}
}

// finishing is a Finisher context.
type finishing struct{ context.Context }

func (finishing) FinishOnCancel() bool { return true }

// TestFinishOnCancel: with a Finisher context, ctx ends the wait for a
// connection, but not an exchange under way: the answer php-fpm sends after
// ctx is done is read whole, and the connection goes back to the pool.
func TestFinishOnCancel(t *testing.T) {
	gotReq := make(chan struct{})
	answer := make(chan struct{})
	c := startFake(t, serveKeep(func(fc *fakeConn, req fakeRequest, body []byte) bool {
		if req.params["REQUEST_URI"] == "/slow" {
			close(gotReq)
			<-answer
		}
		return reply(fc, "\r\nanswered")
	}))
	c.MaxConns = 1
	c.QueueTimeout = time.Minute

	parent, cancel := context.WithCancel(context.Background())
	ctx := finishing{parent}
	p := baseParams("GET")
	p["REQUEST_URI"] = "/slow"
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Do(ctx, &gofast.Request{Params: p})
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	<-gotReq
	cancel() // the client leaves while php-fpm runs the script

	// A second request waits for the one connection; its ctx ends the wait.
	qctx, qcancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := c.Do(finishing{qctx}, &gofast.Request{Params: baseParams("GET")})
		queued <- err
	}()
	testutil.WaitFor(t, "the second request to queue", func() bool { return c.Stats().Waiting == 1 })
	qcancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Errorf("queued Do after cancel = %v; want context.Canceled", err)
	}

	close(answer)
	if r := <-done; r.err != nil || r.body != "answered" {
		t.Errorf("body after cancel = %q, %v; want the whole answer", r.body, r.err)
	}
	if s := c.Stats(); s.Idle != 1 || s.Open != 1 {
		t.Errorf("Stats() = %+v; want the connection back, idle", s)
	}
}
