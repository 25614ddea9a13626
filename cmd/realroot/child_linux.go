package main

import "syscall"

// childAttr puts the child in its own process group and has the kernel send
// it SIGTERM (php-fpm's fast stop) if realroot dies without stopping it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
