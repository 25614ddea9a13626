package fcgi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yookoala/gofast"
)

// hangUntilClosed reads whatever the client sends until it goes away.
func hangUntilClosed(c *fakeConn) { io.Copy(io.Discard, c) }

func TestEndRequestStatus(t *testing.T) {
	tests := []struct {
		name        string
		stdout      string
		status      byte
		wantDoErr   error // from Do
		wantReadErr error // from Body
	}{
		{"complete", "A: b\r\n\r\nbody", statusRequestComplete, nil, io.EOF},
		{"overloaded", "", statusOverloaded, ErrOverloaded, nil},
		{"cant mpx", "", statusCantMpxConn, ErrOverloaded, nil},
		{"unknown role", "", statusUnknownRole, ErrProtocol, nil},
		{"unknown status", "", 9, ErrProtocol, nil},
		{"overloaded after header", "A: b\r\n\r\nbody", statusOverloaded, nil, ErrOverloaded},
		{"overloaded mid header", "A: b\r\n", statusOverloaded, ErrOverloaded, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, func(c *fakeConn) {
				if _, err := c.readRequest(); err != nil {
					return
				}
				c.Write(appendEnd(appendStream(nil, typeStdout, tt.stdout, 100), 7, tt.status))
			})
			resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
			if !errors.Is(err, tt.wantDoErr) || (err == nil) != (tt.wantDoErr == nil) {
				t.Fatalf("Do: got %v; want %v", err, tt.wantDoErr)
			}
			if err != nil {
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if tt.wantReadErr == io.EOF {
				if err != nil || string(body) != "body" || resp.AppStatus() != 7 {
					t.Errorf("got %q, %v, app status %d; want %q, nil, 7", body, err, resp.AppStatus(), "body")
				}
				return
			}
			if !errors.Is(err, tt.wantReadErr) {
				t.Errorf("Read: got %v; want %v", err, tt.wantReadErr)
			}
		})
	}
}

func TestBadRecords(t *testing.T) {
	tests := []struct {
		name   string
		give   []byte
		inBody bool // the error comes after the header block
	}{
		{"http response", []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), false},
		{"bad version", []byte{2, typeStdout, 0, 1, 0, 0, 0, 0}, false},
		{"get values result", appendHeader(nil, typeGetValuesResult, requestID, 0, 0), false},
		{"unknown type", appendHeader(nil, typeUnknownType, 0, 8, 0), false},
		{"stdin from app", appendHeader(nil, typeStdin, requestID, 0, 0), false},
		{"other request id", appendHeader(nil, typeStdout, 2, 0, 0), false},
		{"short end request", appendHeader(nil, typeEndRequest, requestID, 4, 0), false},
		{"garbage after header", append(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100), "garbage!"...), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, func(c *fakeConn) {
				if _, err := c.readRequest(); err != nil {
					return
				}
				c.Write(append(tt.give, make([]byte, 16)...))
				hangUntilClosed(c)
			})
			c.ReadTimeout = 5 * time.Second
			resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
			if tt.inBody {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				defer resp.Body.Close()
				_, err = io.ReadAll(resp.Body)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("got %v; want ErrProtocol", err)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	tests := []struct {
		name   string
		give   []byte
		inBody bool
	}{
		{"nothing", nil, false},
		{"mid header block", appendStream(nil, typeStdout, "A: b\r\n", 100), false},
		{"mid record header", []byte{1, 6, 0}, false},
		{"after header block", appendStream(nil, typeStdout, "A: b\r\n\r\nsome body", 100), true},
		{"mid record", appendStream(nil, typeStdout, "A: b\r\n\r\nsome body", 100)[:20], true},
		{"mid padding", append(appendHeader(nil, typeStdout, requestID, 10, 6), "A: b\r\n\r\nxy"...), true},
		{"after stdout end", appendHeader(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100), typeStdout, requestID, 0, 0), true},
		{"mid end request", appendEnd(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100), 0, 0)[:30], true},
		{"mid stderr", appendStream(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100), typeStderr, "err", 100)[:26], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startFake(t, func(c *fakeConn) {
				if _, err := c.readRequest(); err != nil {
					return
				}
				c.Write(tt.give)
			})
			resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
			if tt.inBody {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				defer resp.Body.Close()
				_, err = io.ReadAll(resp.Body)
			}
			if !errors.Is(err, ErrTruncated) || errors.Is(err, io.EOF) {
				t.Errorf("got %v; want ErrTruncated, not io.EOF", err)
			}
		})
	}
}

func TestReadTimeout(t *testing.T) {
	for _, inBody := range []bool{false, true} {
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readRequest(); err != nil {
				return
			}
			if inBody {
				c.Write(appendStream(nil, typeStdout, "A: b\r\n\r\nx", 100))
			}
			hangUntilClosed(c)
		})
		c.ReadTimeout = 100 * time.Millisecond
		start := time.Now()
		resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("GET")})
		if inBody {
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("in body %v: got %v; want ErrTimeout", inBody, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("in body %v: took %v; want about 100ms", inBody, d)
		}
	}
}

func TestDialError(t *testing.T) {
	dir, err := os.MkdirTemp("", "rr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	stdin := &closeTracker{Reader: strings.NewReader("x")}
	c := &Client{Network: "unix", Address: filepath.Join(dir, "missing.sock")}
	_, err = c.Do(context.Background(), &gofast.Request{Params: baseParams("GET"), Stdin: stdin})
	if !errors.Is(err, ErrConnect) {
		t.Errorf("got %v; want ErrConnect", err)
	}
	if !stdin.isClosed() {
		t.Errorf("Stdin not closed")
	}
}

// failingReader returns some bytes, waits for release (if not nil), then fails
// like http.MaxBytesReader.
type failingReader struct {
	data    []byte
	release <-chan struct{}
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) > 0 {
		n := copy(p, r.data)
		r.data = r.data[n:]
		return n, nil
	}
	if r.release != nil {
		<-r.release
	}
	return 0, &http.MaxBytesError{Limit: 10}
}

func TestStdinError(t *testing.T) {
	t.Run("before header", func(t *testing.T) {
		// The application waits for the whole body before answering.
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readRequest(); err != nil {
				return
			}
			c.Write(appendEnd(appendStream(nil, typeStdout, "\r\n", 10), 0, 0))
		})
		stdin := &closeTracker{Reader: &failingReader{data: []byte("0123456789")}}
		_, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) || mbe.Limit != 10 {
			t.Errorf("got %v; want a *http.MaxBytesError", err)
		}
		if !stdin.isClosed() {
			t.Errorf("Stdin not closed")
		}
	})
	t.Run("in body", func(t *testing.T) {
		// The application answers its header first, then reads the body.
		c := startFake(t, func(c *fakeConn) {
			if _, err := c.readHead(); err != nil {
				return
			}
			c.Write(appendStream(nil, typeStdout, "A: b\r\n\r\nstart", 100))
			if err := c.readStdin(io.Discard); err != nil {
				return
			}
			c.Write(appendEnd(nil, 0, 0))
		})
		release := make(chan struct{})
		stdin := &closeTracker{Reader: &failingReader{data: []byte("0123456789"), release: release}}
		resp, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
		if err != nil {
			close(release)
			t.Fatalf("Do: %v", err)
		}
		defer resp.Body.Close()
		close(release)
		_, err = io.ReadAll(resp.Body)
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			t.Errorf("got %v; want a *http.MaxBytesError", err)
		}
		resp.Body.Close()
		if !stdin.isClosed() {
			t.Errorf("Stdin not closed")
		}
	})
}

// endless is an endless request body.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

func TestWriteTimeout(t *testing.T) {
	c := startFake(t, func(c *fakeConn) { <-c.done }) // accepts, never reads
	c.WriteTimeout = 200 * time.Millisecond
	c.ReadTimeout = time.Minute
	stdin := &closeTracker{Reader: endless{}}
	start := time.Now()
	_, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("got %v; want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v; want about 200ms", d)
	}
	if !stdin.isClosed() {
		t.Errorf("Stdin not closed")
	}
}

func TestAppClosesDuringBody(t *testing.T) {
	c := startFake(t, func(c *fakeConn) { c.readHead() })
	stdin := &closeTracker{Reader: endless{}}
	_, err := c.Do(context.Background(), &gofast.Request{Params: baseParams("POST"), Stdin: stdin})
	if !errors.Is(err, ErrTruncated) {
		t.Errorf("got %v; want ErrTruncated", err)
	}
	if !stdin.isClosed() {
		t.Errorf("Stdin not closed")
	}
}

func TestDoParamTooLong(t *testing.T) {
	c := startFake(t, hangUntilClosed)
	stdin := &closeTracker{Reader: endless{}}
	params := map[string]string{"HTTP_X_HUGE": strings.Repeat("v", 70000)}
	_, err := c.Do(context.Background(), &gofast.Request{Params: params, Stdin: stdin})
	if !errors.Is(err, ErrParamTooLong) {
		t.Errorf("got %v; want ErrParamTooLong", err)
	}
	if !stdin.isClosed() {
		t.Errorf("Stdin not closed")
	}
}
