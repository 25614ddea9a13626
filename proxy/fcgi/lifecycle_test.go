package fcgi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
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
