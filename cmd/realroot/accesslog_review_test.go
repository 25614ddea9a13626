package main

// From a review of the access log: the combined and LTSV encoders.

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLineEncoderAllocs: writing a combined or LTSV access log line
// allocates nothing, as zap's JSON encoder does not: the line is written on
// every request.
func TestLineEncoderAllocs(t *testing.T) {
	fields := accessFields("curl/8.5.0", "https://example.com/", time.Millisecond)
	for _, format := range []string{"combined", "ltsv"} {
		enc := newLineEncoder(format)
		ent := zapcore.Entry{Time: time.Now(), Message: "request", LoggerName: "access"}
		n := testing.AllocsPerRun(100, func() {
			b, err := enc.EncodeEntry(ent, fields)
			if err != nil {
				t.Fatal(err)
			}
			b.Free()
		})
		if n != 0 {
			t.Errorf("%s: %v allocations per line; want 0", format, n)
		}
	}
}

// TestLineEncoderTypes: the values come out the same whatever the
// field's type (With fields, other integer types, an unknown type), and a
// field given twice keeps its last value, as before.
func TestLineEncoderTypes(t *testing.T) {
	when := time.Date(2026, 11, 21, 12, 0, 7, 0, time.FixedZone("", 3600))
	enc := newLineEncoder("combined")
	enc.AddString("referer", "http://with/")
	enc.AddInt("status", 418)
	b, err := enc.EncodeEntry(zapcore.Entry{Time: when, Message: "request"}, []zapcore.Field{
		zap.String("remote_addr", "[2001:db8::1]:443"),
		zap.String("method", "GET"),
		zap.String("method", "POST"),
		zap.Int32("bytes", -3),
		zap.Bool("proto", true),
		zap.Uint16("status", 201),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	want := `2001:db8::1 - - [21/Nov/2026:12:00:07 +0100] "POST - ?" 201 -3 "http://with/" "-"` + "\n"
	if got := b.String(); got != want {
		t.Errorf("line\n got %q\nwant %q", got, want)
	}
}

// BenchmarkAccessLogLine encodes one access log line in each format: the
// JSON one is zap's, the other two lineEncoder's.
func BenchmarkAccessLogLine(b *testing.B) {
	fields := accessFields("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"https://example.com/", time.Millisecond)
	ent := zapcore.Entry{Time: time.Now(), Message: "request", LoggerName: "access"}
	for _, format := range []string{"json", "combined", "ltsv"} {
		enc := newLineEncoder(format)
		if format == "json" {
			enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		}
		b.Run(format, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buf, err := enc.EncodeEntry(ent, fields)
				if err != nil {
					b.Fatal(err)
				}
				buf.Free()
			}
		})
	}
}
