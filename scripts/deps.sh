#!/usr/bin/env bash
# Installs what realroot's tests, demo and benchmarks need on Debian/Ubuntu:
# php-fpm 8.2 with OPcache, the PHP CLI, nginx, wrk and h2load, and a C
# toolchain because `go test -race` needs cgo.
# Idempotent: checks each tool first and runs apt-get only for what is missing.
# Services the packages installed start are stopped and disabled: tests
# start private php-fpm and nginx instances.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { printf 'deps: %s\n' "$*"; }

# has CMD: the command is on PATH or in an sbin directory (not always on a
# normal user's PATH).
has() {
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

pkg_installed() {
	# No pipe into grep -q: with pipefail, dpkg-query's SIGPIPE would count.
	local status
	status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
	[ "$status" = "install ok installed" ]
}

missing=()
has php-fpm8.2 || missing+=(php8.2-fpm)
pkg_installed php8.2-opcache || missing+=(php8.2-opcache)
has php8.2 || missing+=(php8.2-cli)
has nginx || missing+=(nginx-light)
has wrk || missing+=(wrk)
has h2load || missing+=(nghttp2-client)
has pgrep || missing+=(procps) # scripts/bench.sh: the CPU of each front's children
# -race needs cgo: without a C compiler Go turns cgo off and -race fails.
has gcc || missing+=(gcc)
pkg_installed libc6-dev || missing+=(libc6-dev)

if [ ${#missing[@]} -eq 0 ]; then
	say "all present: php-fpm8.2, php8.2-opcache, php8.2, nginx, wrk, h2load, pgrep, gcc, libc6-dev"
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	say "missing: ${missing[*]}; apt-get not found: install these packages by hand" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
	else
		say "missing: ${missing[*]}; not root and sudo not found: run as root" >&2
		exit 1
	fi
fi

# On a fresh machine apt-daily or unattended-upgrades may hold apt's locks
# for a while: apt-get install waits for dpkg's lock (DPkg::Lock::Timeout),
# apt-get update does not wait for its lists lock, so it is retried.
apt=("${sudo[@]}" env LC_ALL=C apt-get -o DPkg::Lock::Timeout=600)
say "missing: ${missing[*]}"
say "apt-get update"
tries=0
until out=$("${apt[@]}" update -q </dev/null 2>&1); do
	printf '%s\n' "$out" >&2
	tries=$((tries + 1))
	case $out in *"Could not get lock"*) [ "$tries" -lt 60 ] || exit 1 ;; *) exit 1 ;; esac
	say "apt's lists are locked by another apt; retrying in 10s"
	sleep 10
done
printf '%s\n' "$out"
say "apt-get install ${missing[*]}"
"${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" </dev/null

# Only the services of packages installed just now: php8.2-fpm's init script
# stops every php-fpm8.2 process on the machine (start-stop-daemon --exec),
# a running test's private php-fpm or the machine's own with it.
for svc in php8.2-fpm:php8.2-fpm nginx:nginx-light; do
	pkg=${svc#*:} svc=${svc%%:*}
	[[ " ${missing[*]} " == *" $pkg "* ]] || continue
	[ -e "/etc/init.d/$svc" ] || [ -e "/lib/systemd/system/$svc.service" ] || continue
	say "stop and disable service $svc"
	if command -v service >/dev/null 2>&1; then
		"${sudo[@]}" service "$svc" stop </dev/null >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null 2>&1; then
		"${sudo[@]}" systemctl disable --now "$svc" </dev/null >/dev/null 2>&1 || true
	fi
done
say "done"
