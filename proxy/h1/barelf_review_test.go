// Regression tests of a second review (2026-11-22). Each test's comment
// tells the bug it caught, since fixed.

package h1

import (
	"testing"
	"time"
)

// http.ReadRequest ends a header line at a bare LF as at CRLF, but
// readRequest looked for the end of the header as "\r\n\r\n" and hasField
// split lines at "\r\n" only. A Transfer-Encoding or Content-Length field
// on a line after a bare LF was not seen, so a request with both (or an
// HTTP/1.0 one with Transfer-Encoding) kept its connection: a proxy in
// front that framed it the other way is desynchronised from h1, which the
// close of TestAmbiguousFramingCloses is there to prevent. (nginx answers
// all three with 400.)
func TestBareLFAmbiguousFraming(t *testing.T) {
	addr, _ := startH1(t, echo)
	for _, tt := range []struct{ name, give string }{
		{"1.0 keep-alive, transfer-encoding after a bare LF",
			"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\nTransfer-Encoding: chunked\r\n\r\nhi"},
		{"1.1 content-length after a bare LF",
			"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"1.1 bare LFs only, CRLFCRLF in the body",
			"POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 3\n\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		c := dial(t, addr)
		c.send(tt.give + get("a", "/smuggled"))
		res, body := c.response("POST")
		if !res.Close {
			t.Errorf("%s: got %q without Connection: close; want the connection closed after it", tt.name, body)
		}
		if !c.closed(2 * time.Second) {
			t.Errorf("%s: connection kept open, the next request read; want it closed (RFC 9112 6.1, 6.3)", tt.name)
		}
	}
}
