package fcgi

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestArmRead: the read deadline moves only when it would fall out of
// [now+timeout-timeout/8, now+timeout], and then to now+timeout.
func TestArmRead(t *testing.T) {
	const timeout = time.Hour // slack 7.5m: the test's own time is noise
	tests := []struct {
		name  string
		armed time.Duration // the deadline already set, from now; 0: none
		want  bool          // moved
	}{
		{"none set", 0, true},
		{"at the bound", timeout, false},
		{"within the slack", timeout - timeout/10, false},
		{"past the slack", timeout - timeout/6, true},
		{"left by an exchange long ago", -time.Minute, true},
		{"later than the bound", timeout + time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := &deadlineConn{}
			pc := &pconn{conn: conn}
			if tt.armed != 0 {
				pc.readDeadline = time.Now().Add(tt.armed)
			}
			before := pc.readDeadline
			start := time.Now()
			for range 3 {
				if err := pc.armRead(timeout); err != nil {
					t.Fatal(err)
				}
			}
			end := time.Now()
			if moved := len(conn.set) > 0; moved != tt.want || len(conn.set) > 1 {
				t.Fatalf("3 reads set the deadline %d times; want moved %v, at most once", len(conn.set), tt.want)
			}
			if !tt.want {
				if !pc.readDeadline.Equal(before) {
					t.Errorf("readDeadline = %v; want %v, unchanged", pc.readDeadline, before)
				}
				return
			}
			d := conn.set[0]
			if d.Before(start.Add(timeout)) || d.After(end.Add(timeout)) || !pc.readDeadline.Equal(d) {
				t.Errorf("deadline set %v (recorded %v); want now+%v", d, pc.readDeadline, timeout)
			}
		})
	}
}

// TestReadTimeoutKept: a kept connection's deadline, left by the previous
// exchange, never cuts the next one short, and a silent application still
// times out within [ReadTimeout-ReadTimeout/8, ReadTimeout].
func TestReadTimeoutKept(t *testing.T) {
	const timeout = 300 * time.Millisecond
	c := startFake(t, serveKeep(func(c *fakeConn, req fakeRequest, body []byte) bool {
		switch req.params["REQUEST_URI"] {
		case "/slow": // answers within ReadTimeout, past the first deadline
			time.Sleep(timeout * 2 / 3)
		case "/silent":
			hangUntilClosed(c)
			return false
		}
		return reply(c, "\r\nok")
	}))
	c.ReadTimeout = timeout
	for _, idle := range []time.Duration{0, timeout / 20, timeout / 2} {
		if _, body, err := fetch(t, c, &gofast.Request{Params: uriParams("GET", "/")}); err != nil || body != "ok" {
			t.Fatalf("GET: got %q, %v; want ok", body, err)
		}
		time.Sleep(idle)
		if _, body, err := fetch(t, c, &gofast.Request{Params: uriParams("GET", "/slow")}); err != nil || body != "ok" {
			t.Errorf("after %v idle: slow GET got %q, %v; want ok", idle, body, err)
		}
	}
	if s := c.Stats(); s.Dials != 1 {
		t.Errorf("Stats() = %+v; want every request on one connection", s)
	}

	start := time.Now()
	_, err := c.Do(context.Background(), &gofast.Request{Params: uriParams("GET", "/silent")})
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("silent GET: got %v; want ErrTimeout", err)
	}
	if took < timeout-timeout/8 || took > 2*time.Second {
		t.Errorf("silent GET timed out after %v; want %v to %v", took, timeout-timeout/8, timeout)
	}
}
