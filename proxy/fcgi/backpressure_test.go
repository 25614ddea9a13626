package fcgi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"realroot/internal/testutil"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// startHeld serves requests on kept connections, each answered once release
// is closed (or at cleanup), with its REQUEST_URI.
func startHeld(t *testing.T, log *connLog) (*Client, chan struct{}) {
	release := make(chan struct{})
	c := startFake(t, log.track(func(c *fakeConn, _ int) {
		serveKeep(func(fc *fakeConn, req fakeRequest, body []byte) bool {
			log.record(req)
			select {
			case <-release:
			case <-fc.done:
				return false
			}
			return reply(fc, "\r\n"+req.params["REQUEST_URI"])
		})(c)
	}))
	return c, release
}

// goFetch runs a GET of uri in a goroutine; the result arrives on the
// returned channel.
func goFetch(wg *sync.WaitGroup, c *Client, ctx context.Context, uri string) <-chan error {
	ch := make(chan error, 1)
	wg.Go(func() {
		resp, err := c.Do(ctx, &gofast.Request{Params: uriParams("GET", uri)})
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && string(body) != uri {
				err = fmt.Errorf("got %q; want %q", body, uri)
			}
		}
		ch <- err
	})
	return ch
}

func TestBackpressure(t *testing.T) {
	// busy starts n requests that hold a connection each.
	busy := func(t *testing.T, wg *sync.WaitGroup, c *Client, n int) []<-chan error {
		var chs []<-chan error
		for i := range n {
			chs = append(chs, goFetch(wg, c, context.Background(), fmt.Sprintf("/busy%d", i)))
		}
		testutil.WaitFor(t, "the connections to be busy", func() bool { return c.Stats().InUse == n })
		return chs
	}
	expectOK := func(t *testing.T, chs []<-chan error) {
		t.Helper()
		for _, ch := range chs {
			if err := <-ch; err != nil {
				t.Error(err)
			}
		}
	}

	t.Run("queue timeout", func(t *testing.T) {
		c, release := startHeld(t, &connLog{})
		c.MaxConns, c.QueueTimeout = 2, 100*time.Millisecond
		var wg sync.WaitGroup
		held := busy(t, &wg, c, 2)
		start := time.Now()
		_, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
		d := time.Since(start)
		if !errors.Is(err, ErrBusy) || d < 90*time.Millisecond || d > time.Second {
			t.Errorf("got %v after %v; want ErrBusy after about 100ms", err, d)
		}
		if s := c.Stats(); s.Busy != 1 || s.Waiting != 0 || s.Open != 2 {
			t.Errorf("Stats() = %+v; want 1 busy, 0 waiting, 2 open", s)
		}
		close(release)
		expectOK(t, held)
		wg.Wait()
	})
	// One timer serves the queue: each waiter still gets its own
	// QueueTimeout, also when the one ahead of it left early.
	t.Run("queue timeout per waiter", func(t *testing.T) {
		c, release := startHeld(t, &connLog{})
		c.MaxConns, c.QueueTimeout = 1, 300*time.Millisecond
		var wg sync.WaitGroup
		held := busy(t, &wg, c, 1)
		ctx, cancel := context.WithCancel(context.Background())
		first := goFetch(&wg, c, ctx, "/first")
		testutil.WaitFor(t, "the first waiter to queue", func() bool { return c.Stats().Waiting == 1 })
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		second := goFetch(&wg, c, context.Background(), "/second")
		testutil.WaitFor(t, "the second waiter to queue", func() bool { return c.Stats().Waiting == 2 })
		cancel() // the head leaves before its timeout
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Errorf("first: got %v; want context.Canceled", err)
		}
		err := <-second
		if d := time.Since(start); !errors.Is(err, ErrBusy) || d < 290*time.Millisecond || d > 2*time.Second {
			t.Errorf("second: got %v after %v; want ErrBusy after its own 300ms", err, d)
		}
		close(release)
		expectOK(t, held)
		wg.Wait()
		if s := c.Stats(); s.Busy != 1 || s.Waiting != 0 {
			t.Errorf("Stats() = %+v; want 1 busy, 0 waiting", s)
		}
	})
	for _, maxQueue := range []int{1, 2} {
		t.Run(fmt.Sprintf("max queue %d", maxQueue), func(t *testing.T) {
			c, release := startHeld(t, &connLog{})
			c.MaxConns, c.MaxQueue = 2, maxQueue
			var wg sync.WaitGroup
			held := busy(t, &wg, c, 2)
			for i := range maxQueue {
				held = append(held, goFetch(&wg, c, context.Background(), fmt.Sprintf("/waiter%d", i)))
				testutil.WaitFor(t, "the waiter to queue", func() bool { return c.Stats().Waiting == i+1 })
			}
			start := time.Now()
			_, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
			if d := time.Since(start); !errors.Is(err, ErrBusy) || d > 50*time.Millisecond {
				t.Errorf("got %v after %v; want ErrBusy at once", err, d)
			}
			close(release)
			expectOK(t, held)
			wg.Wait()
			// The held requests wait for their first byte on new
			// connections: past starveAfter (a slow run) the pool yields
			// a kept one (see pool.put) and dials again. Not tested here.
			if s := c.Stats(); s.Busy != 1 || s.Open != 2 || s.Dials != 2+s.Yielded {
				t.Errorf("Stats() = %+v; want 1 busy, 2 open, 2 dials (+1 a yield)", s)
			}
		})
	}
	t.Run("cancelled waiter", func(t *testing.T) {
		c, release := startHeld(t, &connLog{})
		c.MaxConns = 2
		var wg sync.WaitGroup
		held := busy(t, &wg, c, 2)
		ctx, cancel := context.WithCancel(context.Background())
		waiter := goFetch(&wg, c, ctx, "/waiter")
		testutil.WaitFor(t, "the waiter to queue", func() bool { return c.Stats().Waiting == 1 })
		start := time.Now()
		cancel()
		if err := <-waiter; !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
			t.Errorf("got %v after %v; want context.Canceled at once", err, time.Since(start))
		}
		if s := c.Stats(); s.Waiting != 0 || s.Open != 2 || s.InUse != 2 {
			t.Errorf("Stats() = %+v; want 0 waiting, 2 open and in use", s)
		}
		close(release)
		expectOK(t, held)
		wg.Wait()
	})
	t.Run("fifo", func(t *testing.T) {
		log := &connLog{}
		c, release := startHeld(t, log)
		c.MaxConns = 1
		var wg sync.WaitGroup
		held := busy(t, &wg, c, 1)
		want := []string{"/busy0"}
		for i := range 5 {
			uri := fmt.Sprintf("/waiter%d", i)
			want = append(want, uri)
			held = append(held, goFetch(&wg, c, context.Background(), uri))
			testutil.WaitFor(t, "the waiter to queue", func() bool { return c.Stats().Waiting == i+1 })
		}
		close(release)
		expectOK(t, held)
		wg.Wait()
		if got := log.uris(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("served %v; want %v", got, want)
		}
	})
	t.Run("close fails waiters", func(t *testing.T) {
		c, release := startHeld(t, &connLog{})
		c.MaxConns = 1
		var wg sync.WaitGroup
		held := busy(t, &wg, c, 1)
		waiter := goFetch(&wg, c, context.Background(), "/waiter")
		testutil.WaitFor(t, "the waiter to queue", func() bool { return c.Stats().Waiting == 1 })
		c.Close()
		if err := <-waiter; !errors.Is(err, ErrClosed) {
			t.Errorf("waiter: got %v; want ErrClosed", err)
		}
		close(release)
		expectOK(t, held)
		wg.Wait()
	})
}

func TestClientClose(t *testing.T) {
	log := &connLog{}
	release := make(chan struct{})
	var arrived atomic.Int32
	c := startFake(t, log.track(func(c *fakeConn, _ int) {
		serveKeep(func(fc *fakeConn, req fakeRequest, body []byte) bool {
			if req.params["REQUEST_URI"] == "/held" {
				arrived.Add(1)
				select {
				case <-release:
				case <-fc.done:
					return false
				}
			}
			return reply(fc, "A: b\r\n\r\nbody")
		})(c)
	}))
	// Two idle connections and one held by an exchange in progress.
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if _, _, err := fetch(t, c, &gofast.Request{Params: baseParams("GET")}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	resp := make(chan *Response, 1)
	wg.Go(func() {
		r, err := c.Do(context.Background(), &gofast.Request{Params: uriParams("GET", "/held")})
		if err != nil {
			t.Error(err)
			r = nil
		}
		resp <- r
	})
	testutil.WaitFor(t, "the held request", func() bool { return arrived.Load() == 1 })
	before := c.Stats()
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	idle := before.Idle
	testutil.WaitFor(t, "the fake to see the idle connections closed", func() bool {
		_, closed := log.counts()
		return closed == idle
	})
	if _, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: got %v; want ErrClosed", err)
	}
	close(release)
	r := <-resp
	wg.Wait()
	if r == nil {
		t.FailNow()
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil || string(body) != "body" {
		t.Errorf("exchange in progress at Close: got %q, %v; want %q", body, err, "body")
	}
	if s := c.Stats(); s.Open != 0 {
		t.Errorf("Stats() = %+v; want none open", s)
	}
	testutil.WaitFor(t, "the fake to see every connection closed", func() bool {
		opened, closed := log.counts()
		return closed == opened
	})
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
