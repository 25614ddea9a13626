package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// child is a supervised process: the php-fpm that realroot runs as a
// container entrypoint (realroot -- php-fpm8.2 -F) or for the demo. It has
// its own process group, so that a terminal's Ctrl-C reaches realroot only
// and realroot decides when php-fpm stops: after its own requests drained.
type child struct {
	cmd  *exec.Cmd
	log  *zap.Logger
	done chan struct{} // closed when the process has exited and been reaped
	ws   syscall.WaitStatus
}

// startChild starts argv with stdout and stderr. With a reaper (realroot
// is PID 1), the reaper collects its exit status; otherwise exec.Cmd.Wait
// does.
func startChild(argv []string, stdout, stderr io.Writer, r *reaper, log *zap.Logger) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = childAttr()
	c := &child{cmd: cmd, log: log, done: make(chan struct{})}
	if r == nil {
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", argv[0], err)
		}
		go func() {
			cmd.Wait()
			c.ws, _ = cmd.ProcessState.Sys().(syscall.WaitStatus)
			close(c.done)
		}()
	} else {
		status, err := r.start(cmd)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", argv[0], err)
		}
		go func() {
			c.ws = <-status
			// The reaper took the status: Wait only collects the
			// goroutines copying output (its error is ECHILD).
			cmd.Wait()
			close(c.done)
		}()
	}
	log.Info("php-fpm started", zap.Strings("command", argv), zap.Int("pid", cmd.Process.Pid))
	return c, nil
}

// exitCode is the child's exit status, 128+N when signal N killed it, as
// a shell reports it. Valid once done is closed.
func (c *child) exitCode() int {
	if c.ws.Signaled() {
		return 128 + int(c.ws.Signal())
	}
	return c.ws.ExitStatus()
}

// signal sends sig to the child (its master process) unless it is gone.
func (c *child) signal(sig os.Signal) {
	select {
	case <-c.done:
		return
	default:
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.log.Warn("cannot signal php-fpm", zap.Stringer("signal", sig), zap.Error(err))
	}
}

// waitReady returns once every address accepts a connection. It fails when
// the child exits first or ctx is done. It warns every 10s while waiting.
func (c *child) waitReady(ctx context.Context, addrs [][2]string) error {
	start := time.Now()
	warn := time.NewTicker(10 * time.Second)
	defer warn.Stop()
	for _, a := range addrs {
		for {
			conn, err := net.DialTimeout(a[0], a[1], time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.done:
				return fmt.Errorf("php-fpm exited with status %d before accepting on %s", c.exitCode(), a[1])
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-warn.C:
				c.log.Warn("php-fpm not accepting yet", zap.String("address", a[1]),
					zap.Duration("waited", time.Since(start).Round(time.Second)), zap.Error(err))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// stop stops the child gracefully (SIGQUIT: php-fpm finishes its requests
// and exits), kills its process group after timeout, and waits. Processes
// left in the group once the child is gone (php-fpm's workers, when its
// master was killed) are killed too.
func (c *child) stop(timeout time.Duration) {
	c.signal(syscall.SIGQUIT)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.log.Warn("php-fpm did not stop; killing it", zap.Duration("timeout", timeout))
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	if err := syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL); err == nil {
		c.log.Warn("killed processes left in php-fpm's process group")
	}
}

// reaper reaps every child of realroot when it runs as PID 1 (a container's
// entrypoint): processes whose parent died are re-parented to PID 1, and
// without a wait they stay zombies. On each SIGCHLD it calls
// wait4(-1, WNOHANG) until no exited child is left.
//
// A status it reaps for a process started with start goes to that start's
// channel instead of exec.Cmd.Wait, which would otherwise race with the
// reaper for it (and lose it to ECHILD): reaper.start holds the lock across
// cmd.Start and the registration, so no status can be reaped in between.
type reaper struct {
	log     *zap.Logger
	mu      sync.Mutex
	waiting map[int]chan syscall.WaitStatus
	sigs    chan os.Signal
	stopped chan struct{}
}

// startReaper starts reaping; stop ends it.
func startReaper(log *zap.Logger) *reaper {
	r := &reaper{
		log:     log,
		waiting: map[int]chan syscall.WaitStatus{},
		sigs:    make(chan os.Signal, 1),
		stopped: make(chan struct{}),
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go func() {
		defer close(r.stopped)
		for range r.sigs {
			r.reap()
		}
	}()
	r.reap() // children that exited before Notify
	return r
}

func (r *reaper) stop() {
	signal.Stop(r.sigs)
	close(r.sigs)
	<-r.stopped
}

// start starts cmd and returns the channel that gets its wait status.
func (r *reaper) start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiting[cmd.Process.Pid] = ch
	return ch, nil
}

// run runs cmd as exec.Cmd.Run does, its status collected by the reaper:
// Wait alone would lose it to the reaper's wait4 of any child, and report
// ECHILD for a command that succeeded.
func (r *reaper) run(cmd *exec.Cmd) error {
	status, err := r.start(cmd)
	if err != nil {
		return err
	}
	ws := <-status
	cmd.Wait() // collects the goroutines copying output; its error is ECHILD
	switch {
	case ws.Signaled():
		return fmt.Errorf("signal: %v", ws.Signal())
	case ws.ExitStatus() != 0:
		return fmt.Errorf("exit status %d", ws.ExitStatus())
	}
	return nil
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return // none exited (0) or no children (ECHILD)
		}
		if ch, ok := r.waiting[pid]; ok {
			delete(r.waiting, pid)
			ch <- ws
			continue
		}
		r.log.Debug("reaped orphan", zap.Int("pid", pid), zap.Int("status", int(ws)))
	}
}
