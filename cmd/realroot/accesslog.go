package main

import (
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

// lineEncoder is a zapcore.Encoder that writes proxy's access log entries
// (message "request", fields remote_addr, method, uri, proto, status, bytes,
// duration, upstream_duration, release, request_id, user_agent, referer) as
// one line of the combined log format or of LTSV, so that proxy logs through
// zap whatever the format.
//
// combined is nginx's (and Apache's) format, nginx's escaping:
//
//	127.0.0.1 - - [21/Nov/2026:12:00:00 +0100] "GET /a?b HTTP/1.1" 200 512 "-" "curl/8.5.0"
//
// LTSV (ltsv.org) uses its usual labels, durations in seconds with
// millisecond precision like nginx's $request_time, apptime "-" when php-fpm
// was not involved:
//
//	time:[21/Nov/2026:12:00:00 +0100]<TAB>host:127.0.0.1<TAB>method:GET<TAB>uri:/a?b<TAB>protocol:HTTP/1.1<TAB>
//	status:200<TAB>size:512<TAB>reqtime:0.012<TAB>apptime:0.010<TAB>referer:-<TAB>ua:curl/8.5.0<TAB>
//	release:/srv/app/releases/3/public<TAB>request_id:6f1c...-1
//
// An empty or missing value is "-". Bytes below 0x20, above 0x7e, '"' and
// '\' are written as \xHH, as nginx does; a line never holds a raw tab or
// newline.
type lineEncoder struct {
	*zapcore.MapObjectEncoder // fields added with Logger.With
	ltsv                      bool
}

// newLineEncoder returns the encoder of format "combined" or "ltsv".
func newLineEncoder(format string) zapcore.Encoder {
	return &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder(), ltsv: format == "ltsv"}
}

var (
	linePool = buffer.NewPool()
	mapPool  = sync.Pool{New: func() any { return zapcore.NewMapObjectEncoder() }}
)

// Clone copies the encoder and its fields.
func (e *lineEncoder) Clone() zapcore.Encoder {
	c := &lineEncoder{MapObjectEncoder: zapcore.NewMapObjectEncoder(), ltsv: e.ltsv}
	for k, v := range e.Fields {
		c.Fields[k] = v
	}
	return c
}

// EncodeEntry writes one line.
func (e *lineEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	m := mapPool.Get().(*zapcore.MapObjectEncoder)
	defer func() { clear(m.Fields); mapPool.Put(m) }()
	for k, v := range e.Fields {
		m.Fields[k] = v
	}
	for _, f := range fields {
		f.AddTo(m)
	}
	b := linePool.Get()
	f := m.Fields
	if e.ltsv {
		b.AppendString("time:[")
		b.AppendTime(ent.Time, clfTime)
		b.AppendString("]\thost:")
		appendEscaped(b, host(f["remote_addr"]))
		for _, l := range []struct{ label, key string }{
			{"method", "method"}, {"uri", "uri"}, {"protocol", "proto"}, {"status", "status"}, {"size", "bytes"},
		} {
			b.AppendString("\t" + l.label + ":")
			appendEscaped(b, text(f[l.key]))
		}
		b.AppendString("\treqtime:")
		appendSeconds(b, f["duration"])
		b.AppendString("\tapptime:")
		appendSeconds(b, f["upstream_duration"])
		for _, l := range []struct{ label, key string }{
			{"referer", "referer"}, {"ua", "user_agent"}, {"release", "release"}, {"request_id", "request_id"},
		} {
			b.AppendString("\t" + l.label + ":")
			appendEscaped(b, text(f[l.key]))
		}
	} else {
		appendEscaped(b, host(f["remote_addr"]))
		b.AppendString(" - - [")
		b.AppendTime(ent.Time, clfTime)
		b.AppendString(`] "`)
		appendEscaped(b, text(f["method"]))
		b.AppendByte(' ')
		appendEscaped(b, text(f["uri"]))
		b.AppendByte(' ')
		appendEscaped(b, text(f["proto"]))
		b.AppendString(`" `)
		appendEscaped(b, text(f["status"]))
		b.AppendByte(' ')
		appendEscaped(b, text(f["bytes"]))
		b.AppendString(` "`)
		appendEscaped(b, text(f["referer"]))
		b.AppendString(`" "`)
		appendEscaped(b, text(f["user_agent"]))
		b.AppendByte('"')
	}
	b.AppendByte('\n')
	return b, nil
}

// clfTime is the Common Log Format's time, nginx's $time_local.
const clfTime = "02/Jan/2006:15:04:05 -0700"

// text formats a field's value; "" when missing.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case int:
		return strconv.Itoa(x)
	case time.Duration:
		return x.String()
	case nil:
		return ""
	}
	return "?"
}

// host is remote_addr without its port.
func host(v any) string {
	s := text(v)
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// appendSeconds writes a duration in seconds with 3 decimals, "-" when zero
// or missing.
func appendSeconds(b *buffer.Buffer, v any) {
	d, _ := v.(time.Duration)
	if d <= 0 {
		b.AppendByte('-')
		return
	}
	var scratch [24]byte
	b.Write(strconv.AppendFloat(scratch[:0], d.Seconds(), 'f', 3, 64))
}

// appendEscaped writes s with nginx's escaping, or "-" when s is empty.
func appendEscaped(b *buffer.Buffer, s string) {
	if s == "" {
		b.AppendByte('-')
		return
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b.AppendString(`\x`)
			b.AppendByte(hex[c>>4])
			b.AppendByte(hex[c&0xf])
			continue
		}
		b.AppendByte(c)
	}
}
