package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"realroot/conf"
	"realroot/proxy/fcgi"
	"realroot/resolve"
)

// One php-fpm master of managed mode: its configuration, its process and
// its FastCGI client. managed.go decides when pools start and stop.

// poolState is where a pool is in its life. Only the manager changes it,
// under its lock.
type poolState int

const (
	poolStarting poolState = iota // the process runs; its socket does not answer yet
	poolWarming                   // it answers; the warm-up runs through it
	poolServing                   // the current release's: new requests go to it
	poolDraining                  // a previous release's: its requests finish
	poolStopping                  // SIGQUIT sent; no request goes to it
	poolStopped                   // no process left
)

func (s poolState) String() string {
	return [...]string{"starting", "warming", "serving", "draining", "stopping", "stopped"}[s]
}

// fpmPool is one php-fpm master started for one release, with its workers
// (its process group), on its own socket in the manager's runtime directory.
type fpmPool struct {
	name   string // {{name}}
	rel    *resolve.Release
	owner  *poolRoot
	socket string
	conf   string // the generated php-fpm.conf
	pid    string // php-fpm's pid file
	log    *zap.Logger

	started time.Time
	ch      *child       // set by start; read by others once up
	client  *fcgi.Client // set by start; read by others once up
	out     *fpmOutput

	inFlight atomic.Int64

	// Guarded by managed.mu.
	up      bool // start succeeded: ch and client are set
	state   poolState
	since   time.Time // of state
	stopped time.Time
	err     error // why it stopped, when not after a drain
}

// start writes p's configuration from tmpl, starts php-fpm and returns once
// it answers a FastCGI request, or an error saying why it did not within
// ctx. On error the process is stopped and its files removed.
func (p *fpmPool) start(ctx context.Context, bin, tmpl string, c conf.Config, r *reaper) error {
	text, err := renderPool(tmpl, p, c.PoolStopTimeout)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.conf, []byte(text), 0o600); err != nil {
		return err
	}
	p.out = &fpmOutput{log: p.log}
	p.ch, err = startChild(fpmArgs(bin, p.conf, text), p.out, p.out, r, p.log)
	if err != nil {
		p.removeFiles()
		return err
	}
	err = p.ch.waitReady(ctx, [][2]string{{"unix", p.socket}})
	if err == nil {
		_, err = askFastCGI(ctx, "unix", p.socket, c, p.rel.Root)
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within pool-start-timeout %v: %w", c.PoolStartTimeout, err)
		}
		p.kill(c.PoolStopTimeout)
		if why := p.out.errors(); why != "" {
			err = fmt.Errorf("%w: %s", err, why)
		}
		return err
	}
	p.client = newClient("unix", p.socket, c)
	return nil
}

// kill stops p's processes at once: php-fpm's fast stop (SIGTERM), then
// SIGKILL, and removes its files. For a pool that failed to start.
func (p *fpmPool) kill(timeout time.Duration) {
	p.ch.signal(syscall.SIGTERM)
	p.waitGone(min(timeout, 2*time.Second))
	p.removeFiles()
}

// stop stops p gracefully: SIGQUIT (php-fpm lets its workers finish their
// requests), then after timeout SIGTERM to its process group, then SIGKILL.
// It returns once no process of the group is left, and removes p's files.
func (p *fpmPool) stop(timeout time.Duration) {
	// A kept connection holds its worker, idle or not, and php-fpm's
	// graceful stop waits for it: close them first. Exchanges still
	// running finish.
	p.client.Close()
	p.ch.signal(syscall.SIGQUIT)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.ch.done:
	case <-t.C:
		p.log.Warn("php-fpm pool did not stop; terminating it", zap.Duration("timeout", timeout))
		syscall.Kill(-p.ch.cmd.Process.Pid, syscall.SIGTERM)
	}
	p.waitGone(2 * time.Second)
	p.removeFiles()
}

// waitGone waits for the master to exit, SIGKILLing its process group
// after grace, then until no other process of the group is left (workers
// outliving a master that was killed).
func (p *fpmPool) waitGone(grace time.Duration) {
	pgid := p.ch.cmd.Process.Pid
	select {
	case <-p.ch.done:
	case <-time.After(grace):
		p.log.Warn("php-fpm pool still running; killing it")
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.ch.done
	}
	for deadline := time.Now().Add(grace); ; {
		if len(groupMembers(pgid)) == 0 {
			return
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
		if time.Now().After(deadline) {
			p.log.Warn("processes left in a php-fpm pool's group", zap.Int("pgid", pgid))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *fpmPool) removeFiles() {
	for _, f := range []string{p.socket, p.conf, p.pid} {
		os.Remove(f)
	}
}

// groupUsage returns how many processes process group pgid has and the sum
// of their VmRSS.
func groupUsage(pgid int) (procs int, rss int64) {
	for _, pid := range groupMembers(pgid) {
		procs++
		rss += vmRSS(pid)
	}
	return procs, rss
}

// groupMembers returns the live (not zombie) processes of process group
// pgid, from /proc.
func groupMembers(pgid int) []int {
	var pids []int
	eachProc(func(p procStat) {
		if p.pgrp == pgid && p.state != "Z" && p.state != "X" {
			pids = append(pids, p.pid)
		}
	})
	return pids
}

// procStat is what realroot reads of a process's /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state, comm     string
}

// eachProc calls f for every process in /proc, zombies included; a process
// gone meanwhile is skipped.
func eachProc(f func(procStat)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if name[0] < '0' || name[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(data, ')')
		j := bytes.IndexByte(data, '(')
		if i < 0 || j < 0 || j > i {
			continue
		}
		p := procStat{comm: string(data[j+1 : i])}
		if _, err := fmt.Sscan(string(data[i+1:]), &p.state, &p.ppid, &p.pgrp); err != nil {
			continue
		}
		if _, err := fmt.Sscan(name, &p.pid); err != nil {
			continue
		}
		f(p)
	}
}

// vmRSS returns the VmRSS of pid in bytes, 0 when unknown.
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(v), " kB"), &kb)
			return kb << 10
		}
	}
	return 0
}

// fpmOutput is a pool's stdout and stderr (php-fpm's error_log, and its
// workers' output with catch_workers_output): each line goes to the log,
// at a level from php-fpm's own, and the ERROR and ALERT lines are kept
// for the message of a failed start.
type fpmOutput struct {
	log *zap.Logger

	mu   sync.Mutex
	part []byte   // a line not ended yet
	errs []string // the first few ERROR and ALERT lines
}

func (o *fpmOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.part = append(o.part, b...)
	for {
		i := bytes.IndexByte(o.part, '\n')
		if i < 0 {
			break
		}
		o.line(string(o.part[:i]))
		o.part = o.part[i+1:]
	}
	if len(o.part) > 8<<10 { // a line that does not end: log it in pieces
		o.line(string(o.part))
		o.part = o.part[:0]
	}
	return len(b), nil
}

// line logs one line. php-fpm writes "[22-Nov-2026 01:15:13] NOTICE: ...":
// the date goes (the log has its own), the level picks zap's.
func (o *fpmOutput) line(l string) {
	l = strings.TrimRight(l, "\r")
	if l == "" {
		return
	}
	if strings.HasPrefix(l, "[") {
		if i := strings.Index(l, "] "); i > 0 && i < 32 {
			l = l[i+2:]
		}
	}
	lvl := zap.WarnLevel
	switch {
	case strings.HasPrefix(l, "NOTICE: "), strings.HasPrefix(l, "DEBUG: "):
		lvl = zap.DebugLevel
	case strings.HasPrefix(l, "ERROR: "), strings.HasPrefix(l, "ALERT: "):
		lvl = zap.ErrorLevel
		if len(o.errs) < 4 && !slices.Contains(o.errs, l) { // -t writes them twice
			o.errs = append(o.errs, l)
		}
	}
	if ce := o.log.Check(lvl, "php-fpm"); ce != nil {
		ce.Write(zap.String("line", l))
	}
}

// errors returns the ERROR and ALERT lines php-fpm wrote, joined.
func (o *fpmOutput) errors() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.errs, "; ")
}
