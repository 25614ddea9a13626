package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"realroot/conf"
)

// logs are realroot's log and access log and the files they write to.
type logs struct {
	level zap.AtomicLevel // changed by a reload
	main  *zap.Logger
	enc   zapcore.EncoderConfig
	files []*logFile // reopened on SIGUSR1
	out   zapcore.WriteSyncer
	aout  zapcore.WriteSyncer // the access log's
}

// newLogs opens c's log files (stderr when a path is empty).
func newLogs(c conf.Config, stderr io.Writer) (*logs, error) {
	level, err := zapcore.ParseLevel(c.LogLevel)
	if err != nil {
		return nil, &usageError{fmt.Errorf("log-level: %w", err)}
	}
	l := &logs{level: zap.NewAtomicLevelAt(level)}
	l.enc = zap.NewProductionEncoderConfig()
	l.enc.TimeKey = "time"
	l.enc.EncodeTime = zapcore.ISO8601TimeEncoder

	// One writer per destination, so that lines to the same one never
	// interleave.
	byPath := map[string]zapcore.WriteSyncer{}
	open := func(key, path string) (zapcore.WriteSyncer, error) {
		if ws, ok := byPath[path]; ok {
			return ws, nil
		}
		var ws zapcore.WriteSyncer
		if path == "" {
			ws = zapcore.Lock(zapcore.AddSync(stderr))
		} else {
			f, err := openLogFile(path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			l.files = append(l.files, f)
			ws = f
		}
		byPath[path] = ws
		return ws, nil
	}
	if l.out, err = open("log-file", c.LogFile); err != nil {
		return nil, err
	}
	if l.aout, err = open("access-log-file", c.AccessLogFile); err != nil {
		l.close()
		return nil, err
	}
	l.main = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(l.enc), l.out, l.level))
	return l, nil
}

// access returns the access logger of format (json, combined, ltsv), or nil
// for off. It never samples: every request gets its line.
func (l *logs) access(format string) *zap.Logger {
	var enc zapcore.Encoder
	switch format {
	case "off":
		return nil
	case "json":
		enc = zapcore.NewJSONEncoder(l.enc)
	default:
		enc = newLineEncoder(format)
	}
	return zap.New(zapcore.NewCore(enc, l.aout, zapcore.InfoLevel)).Named("access")
}

// reopen reopens every log file, for logrotate (SIGUSR1).
func (l *logs) reopen() error {
	var errs []error
	for _, f := range l.files {
		errs = append(errs, f.reopen())
	}
	return errors.Join(errs...)
}

func (l *logs) close() {
	if l.main != nil {
		l.main.Sync()
	}
	for _, f := range l.files {
		f.close()
	}
}

// logFile is a log file that can be reopened under its path while it is
// written to.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// reopen opens the path again (logrotate moved the file away) and closes
// the old file. On error the old file stays in use.
func (l *logFile) reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	return old.Close()
}

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f.Close()
}
