#!/usr/bin/env bash
# Benchmarks realroot against nginx in front of one private php-fpm, side by
# side in one run, and prints req/s, p50, p99 per workload and front with the
# ratios realroot/nginx.
#
#   fronts   nginx-plain   nginx, $realpath_root, a FastCGI connection per request
#            nginx-keep    the same with fastcgi_keep_conn on + upstream keepalive 8
#            realroot      this repository, built into the temp dir (HTTP/1.1:
#                          proxy/h1, its default)
#            realroot-nethttp the same with --http1-server net/http (Go's server),
#                          when it has the flag
#            limit         internal/fcgiload: the same php-fpm over FastCGI with
#                          no HTTP in between, the ceiling for any front
#            go-floor      internal/gofloor: the least a Go HTTP front does per
#                          PHP request (fixed params, no routing, no parsing),
#                          hello and front only; not a target, a measuring
#                          stick for realroot's own cost
#   loads    hello         /hello.php, echoes one line
#            front         /app/route?id=1 -> index.php, which includes 50 files
#            static        /static.css, 1 KiB
#            gzip          /app.css, 20 KiB of CSS, Accept-Encoding: gzip,
#                          compressed on the fly (nginx: gzip on, level 5)
#            gzip-static   /app-pre.css, the same with its .gz beside it
#                          (nginx: gzip_static on; realroot finds siblings)
#            h2-hello      /hello.php and /static.css over HTTP/2 without TLS
#            h2-static     (h2c, prior knowledge): h2load -m10 (H2_STREAMS);
#                          realroot --h2c, nginx listen ... http2
#
# Runs are interleaved (every front once per workload per round) so that
# machine noise falls on all fronts alike; the table shows the median over
# rounds. Each front runs alone: started before its run (1s warm-up), stopped
# after, so that no front's kept FastCGI connections hold workers during
# another's run. Then a saturation scenario: php-fpm with SAT_WORKERS
# workers, a script sleeping 50 ms, SAT_CONNS clients (fcgiload -http): status
# codes per front, requests left hanging, and php-fpm's status page after.
#
# Usage: scripts/bench.sh                       full run (DURATION=10 ROUNDS=2)
#        DURATION=2 ROUNDS=1 scripts/bench.sh   smoke run
# Environment: DURATION (s per run, 10), ROUNDS (2), CONNS (16), THREADS (2),
# WORKERS (php-fpm pm.max_children, 8), SAT_WORKERS (4), SAT_CONNS (64),
# SAT_DURATION (s, DURATION), BASE_PORT (18080), VERBOSE=1 (print raw output),
# WORKLOADS (a subset of "hello front static gzip gzip-static h2-hello
# h2-static"), H2_STREAMS (h2load -m, 10), SATURATION=0 (skip it),
# STEAL_WARN (%, 5: a row whose round lost more CPU to the hypervisor is
# marked "stolen").
# Needs go, nginx, wrk, php-fpm 8.2 (scripts/deps.sh installs them); the h2
# rows need h2load, nginx's http_v2_module and realroot's --h2c, and are
# skipped with a note otherwise. The gzip rows' answers are checked once per
# front (decoded with curl when present, else their headers only). Everything
# lives in a temp dir, binds 127.0.0.1 only, and is stopped and removed on exit.
set -euo pipefail

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-8}
SAT_WORKERS=${SAT_WORKERS:-4}
SAT_CONNS=${SAT_CONNS:-64}
SAT_DURATION=${SAT_DURATION:-$DURATION}
BASE_PORT=${BASE_PORT:-18080}
H2_STREAMS=${H2_STREAMS:-10}
VERBOSE=${VERBOSE:-0}
STEAL_WARN=${STEAL_WARN:-5}

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

cd "$(dirname "$0")/.."
repo=$(pwd)

# find_bin NAME: NAME on PATH or in an sbin directory.
find_bin() {
	command -v "$1" 2>/dev/null && return
	local d
	for d in /usr/sbin /sbin /usr/local/sbin; do
		[ -x "$d/$1" ] && echo "$d/$1" && return
	done
	return 1
}

GO=$(find_bin go) || die "go not found"
NGINX=$(find_bin nginx) || die "nginx not found: run scripts/deps.sh"
WRK=$(find_bin wrk) || die "wrk not found: run scripts/deps.sh"
FPM=$(find_bin php-fpm8.2) || FPM=$(find_bin php-fpm) || die "php-fpm8.2 not found: run scripts/deps.sh"
H2LOAD=$(find_bin h2load) || H2LOAD=""
CURL=$(find_bin curl) || CURL=""

# --- processes: every one started here is recorded and stopped on exit ----

pids=()
tmp=""

stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		stop_pid "$pid"
	done
	pids=()
	[ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: starts CMD in the background, output in $tmp/NAME.out;
# sets $started to its pid.
started=""
start() {
	local name=$1
	shift
	"$@" >"$tmp/$name.out" 2>&1 </dev/null &
	started=$!
	pids+=("$started")
}

# stop PID: stops a process started with start and forgets it.
stop() {
	local pid=$1 keep=() p
	stop_pid "$pid"
	for p in "${pids[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	pids=("${keep[@]}")
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID NAME: until PORT accepts and PID still runs (not an
# older process on the port), or fail with NAME's output.
wait_port() {
	local i
	for i in $(seq 100); do
		kill -0 "$2" 2>/dev/null || break
		if port_open "$1"; then
			sleep 0.1
			kill -0 "$2" 2>/dev/null && return 0
			break
		fi
		sleep 0.1
	done
	cat "$tmp/$3.out" "$tmp/$3/error.log" >&2 2>/dev/null || true
	die "$3 does not listen on 127.0.0.1:$1"
}

# stop_port PID PORT: stop, then wait until nothing listens on PORT (nginx
# workers may outlive their master for a moment).
stop_port() {
	stop "$1"
	local i
	for i in $(seq 50); do
		port_open "$2" || return 0
		sleep 0.1
	done
	die "127.0.0.1:$2 still accepts after its front was stopped"
}

# http_get PORT PATH: the raw HTTP/1.0 response (no curl on a fresh machine).
http_get() {
	timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
		printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3 && cat <&3' _ "$1" "$2"
}

# gzip_check PORT PATH FILE: "" if PATH comes gzip-encoded for Accept-Encoding:
# gzip (the header wrk sends) and, with curl, decodes to FILE (is FILE.gz
# when there is one, not a fresh compression); else a note.
gzip_check() {
	local port=$1 path=$2 file=$3 hdr=$tmp/check.hdr body=$tmp/check.body
	if [ -n "$CURL" ]; then
		"$CURL" -s -m 5 -H 'Accept-Encoding: gzip' -D "$hdr" -o "$body" "http://127.0.0.1:$port$path" ||
			die "GET $path on port $port failed"
	else # headers only: an HTTP/1.1 request (nginx gzips no HTTP/1.0 by default)
		timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
			printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n" "$2" >&3 &&
			sed "/^\r\?\$/q" <&3' _ "$port" "$path" >"$hdr" || die "GET $path on port $port failed"
	fi
	if ! grep -qi '^Content-Encoding: *gzip' "$hdr"; then
		echo "not compressed"
	elif [ -z "$CURL" ]; then
		echo "gzip (headers checked only: no curl)"
	elif ! gzip -dc <"$body" 2>/dev/null | cmp -s - "$file"; then
		echo "gzip, but not of the file"
	elif [ -e "$file.gz" ] && ! cmp -s "$body" "$file.gz"; then
		echo "compressed on the fly, not the .gz"
	fi
}

# --- the temp dir, the binaries, the site ----------------------------------

# Short: unix socket paths are limited to ~108 bytes.
tmp=$(mktemp -d /tmp/rrbench.XXXXXX)
chmod 755 "$tmp"

say "building realroot and fcgiload"
"$GO" build -o "$tmp/realroot" ./cmd/realroot
"$GO" build -o "$tmp/fcgiload" ./internal/fcgiload
"$GO" build -o "$tmp/gofloor" ./internal/gofloor

site=$tmp/site
rel=$site/releases/r1
mkdir -p "$rel/public" "$rel/lib"
ln -s releases/r1 "$site/current"
docroot=$site/current/public # what every front is given
realroot_dir=$rel/public      # $realpath_root: what php-fpm sees

printf '<?php\necho "Hello, world!\\n";\n' >"$rel/public/hello.php"
printf '<?php\nusleep(50000);\necho "slept\\n";\n' >"$rel/public/sleep.php"
{
	printf '<?php\n// A front controller: bootstrap ~50 files, route, answer.\n'
	for i in $(seq -w 1 50); do
		printf "require __DIR__ . '/../lib/Part%s.php';\n" "$i"
		printf '<?php\nfinal class Part%s {\n\tpublic static function weight(): int { return %d; }\n}\n' \
			"$i" "$((10#$i))" >"$rel/lib/Part$i.php"
	done
	printf '$sum = 0;\n'
	for i in $(seq -w 1 50); do
		printf '$sum += Part%s::weight();\n' "$i"
	done
	printf 'echo "front ", $_SERVER["REQUEST_URI"], " ", $sum, "\\n";\n'
} >"$rel/public/index.php"
head -c 1024 /dev/zero | tr '\0' 'a' | fold -w 63 >"$rel/public/static.css"
truncate -s 1024 "$rel/public/static.css"
# 20 KiB of CSS that compresses like CSS (~5x with gzip), not like zeros.
awk 'BEGIN {
	srand(1)
	split("header nav main footer card button list item title text link icon menu modal form input", n, " ")
	split("color background border-color outline-color", c, " ")
	for (i = 1; i <= 200; i++)
		printf ".%s-%s__%s--%d {\n\t%s: #%06x;\n\tmargin: %dpx %dpx;\n\tpadding: %dpx;\n\tfont: %dpx/1.%d sans-serif;\n}\n",
			n[int(rand() * 16) + 1], n[int(rand() * 16) + 1], n[int(rand() * 16) + 1], i,
			c[int(rand() * 4) + 1], int(rand() * 16777216), int(rand() * 32), int(rand() * 32),
			int(rand() * 24), 10 + int(rand() * 12), int(rand() * 9)
}' >"$rel/public/app.css"
truncate -s 20480 "$rel/public/app.css"
cp "$rel/public/app.css" "$rel/public/app-pre.css"
gzip -9 -n -k "$rel/public/app-pre.css"

# --- php-fpm ----------------------------------------------------------------

ini=$tmp/php.ini
{
	[ -r /usr/lib/php/8.2/php.ini-production ] && cat /usr/lib/php/8.2/php.ini-production
	printf '\n; bench\n[PHP]\n'
	"$FPM" -c /dev/null -m 2>/dev/null | grep -qx 'Zend OPcache' || printf 'zend_extension = opcache\n'
	printf '%s\n' 'opcache.enable = 1' 'opcache.validate_timestamps = 0' 'opcache.revalidate_path = 0' \
		'realpath_cache_ttl = 120' 'realpath_cache_size = 4096k' 'display_errors = Off' 'log_errors = On'
} >"$ini"

# start_fpm NAME WORKERS: a private pm=static pool; sets $fpm_pid and $fpm_sock.
start_fpm() {
	local name=$1 workers=$2 dir=$tmp/$1
	mkdir -p "$dir"
	fpm_sock=$dir/fpm.sock
	{
		printf '[global]\npid = %s\nerror_log = %s\ndaemonize = no\nprocess_control_timeout = 2s\n' \
			"$dir/php-fpm.pid" "$dir/php-fpm.log"
		printf '[bench]\nlisten = %s\nlisten.mode = 0666\npm = static\npm.max_children = %d\n' "$fpm_sock" "$workers"
		printf 'pm.max_requests = 0\npm.status_path = /fpm-status\nping.path = /fpm-ping\ncatch_workers_output = no\n'
		if [ "$(id -u)" -eq 0 ]; then printf 'user = root\ngroup = root\n'; fi
	} >"$dir/php-fpm.conf"
	local args=(-F -y "$dir/php-fpm.conf" -c "$ini")
	# php-fpm refuses to run as root without -R.
	[ "$(id -u)" -eq 0 ] && args+=(-R)
	start "$name" "$FPM" "${args[@]}"
	fpm_pid=$started
	local i
	for i in $(seq 100); do
		"$tmp/fcgiload" -fastcgi "unix:$fpm_sock" -get /fpm-ping -timeout 1s >/dev/null 2>&1 && return 0
		kill -0 "$fpm_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$tmp/$name.out" "$dir/php-fpm.log" >&2 || true
	die "php-fpm $name does not answer on $fpm_sock"
}

# --- nginx ------------------------------------------------------------------

nginx_v=$("$NGINX" -V 2>&1)
nginx_h2=0
grep -q -- --with-http_v2_module <<<"$nginx_v" && nginx_h2=1
# Compression only for clients that accept it (wrk and h2load send no
# Accept-Encoding unless told), so the other rows are unaffected. No
# gzip_vary: with it, gzip_static looks for a .gz on every request.
nginx_gzip="gzip on; gzip_types text/css application/json application/javascript; gzip_comp_level 5; gzip_min_length 1024;"
grep -q -- --with-http_gzip_static_module <<<"$nginx_v" && nginx_gzip+=" gzip_static on;"

# start_nginx NAME PORT SOCK KEEP H2: KEEP=1 adds fastcgi_keep_conn and an
# upstream keepalive 8; H2=1 makes the listener HTTP/2 without TLS (nginx
# 1.22: "listen PORT http2" without ssl is h2c, prior knowledge only).
# Sets $started.
start_nginx() {
	local name=$1 port=$2 sock=$3 keep=$4 h2=$5 dir=$tmp/$1
	mkdir -p "$dir"
	local pass="unix:$sock" upstream="" keepconn="" types listen="listen 127.0.0.1:$port"
	if [ "$keep" = 1 ]; then
		pass=php
		upstream="upstream php { server unix:$sock; keepalive 8; }"
		keepconn="fastcgi_keep_conn on;"
	fi
	if [ -r /etc/nginx/mime.types ]; then
		types="include /etc/nginx/mime.types;"
	else
		types="types { text/html html; text/css css; application/javascript js; }"
	fi
	[ "$h2" = 1 ] && listen+=" http2"
	cat >"$dir/nginx.conf" <<EOF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
	$types
	default_type application/octet-stream;
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path $dir/body;
	fastcgi_temp_path $dir/fastcgi;
	proxy_temp_path $dir/proxy;
	scgi_temp_path $dir/scgi;
	uwsgi_temp_path $dir/uwsgi;
	$nginx_gzip
	$upstream
	server {
		$listen;
		root $docroot;
		index index.php index.html;
		location / {
			try_files \$uri \$uri/ /index.php?\$args;
		}
		location ~ [^/]\.php(/|\$) {
			fastcgi_split_path_info ^(.+?\.php)(/.*)\$;
			try_files \$fastcgi_script_name =404;
			fastcgi_param QUERY_STRING \$query_string;
			fastcgi_param REQUEST_METHOD \$request_method;
			fastcgi_param CONTENT_TYPE \$content_type;
			fastcgi_param CONTENT_LENGTH \$content_length;
			fastcgi_param SCRIPT_NAME \$fastcgi_script_name;
			fastcgi_param REQUEST_URI \$request_uri;
			fastcgi_param DOCUMENT_URI \$document_uri;
			fastcgi_param SERVER_PROTOCOL \$server_protocol;
			fastcgi_param REQUEST_SCHEME \$scheme;
			fastcgi_param HTTPS \$https if_not_empty;
			fastcgi_param GATEWAY_INTERFACE CGI/1.1;
			fastcgi_param SERVER_SOFTWARE nginx/\$nginx_version;
			fastcgi_param REMOTE_ADDR \$remote_addr;
			fastcgi_param REMOTE_PORT \$remote_port;
			fastcgi_param SERVER_ADDR \$server_addr;
			fastcgi_param SERVER_PORT \$server_port;
			fastcgi_param SERVER_NAME \$server_name;
			fastcgi_param REDIRECT_STATUS 200;
			fastcgi_param SCRIPT_FILENAME \$realpath_root\$fastcgi_script_name;
			fastcgi_param DOCUMENT_ROOT \$realpath_root;
			fastcgi_param PATH_INFO \$fastcgi_path_info;
			fastcgi_pass $pass;
			$keepconn
		}
	}
}
EOF
	local args=(-p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off; master_process on;')
	"$NGINX" "${args[@]}" -t >"$dir/test.out" 2>&1 || {
		cat "$dir/test.out" >&2
		die "nginx $name: bad configuration"
	}
	start "$name" "$NGINX" "${args[@]}"
	wait_port "$port" "$started" "$name"
}

# --- realroot ---------------------------------------------------------------

# The FastCGI pool's flags are being added; pass them once they exist.
rr_help=$("$tmp/realroot" serve --help 2>&1 || true)
rr_pool=0
grep -q -- 'max-conns' <<<"$rr_help" && rr_pool=1
rr_queue=0
grep -q -- 'queue-timeout' <<<"$rr_help" && rr_queue=1
rr_h2c=0
grep -q -- '--h2c' <<<"$rr_help" && rr_h2c=1
# realroot-nethttp: the same with --http1-server net/http, when it exists.
rr_fronts=realroot
grep -q -- '--http1-server' <<<"$rr_help" && rr_fronts="realroot realroot-nethttp"

# start_realroot NAME PORT SOCK MAXCONNS [ARG...]: sets $started.
start_realroot() {
	local name=$1 port=$2 sock=$3 maxconns=$4
	shift 4
	local args=(serve --listen "127.0.0.1:$port" --root "$docroot" --fastcgi "unix:$sock"
		--access-log off --log-level warn "$@")
	[ "$rr_pool" = 1 ] && args+=(--max-conns "$maxconns")
	start "$name" "$tmp/realroot" "${args[@]}"
	wait_port "$port" "$started" "$name"
}

# --- fronts -----------------------------------------------------------------

# start_front FRONT PORT SOCK WORKERS [h2]: starts FRONT (nginx-plain,
# nginx-keep, realroot, realroot-shed) alone on PORT in front of the php-fpm
# at SOCK; with h2 it speaks HTTP/2 without TLS. stop_front stops it.
front_pid=""
front_port=""
start_front() {
	local f=$1 port=$2 sock=$3 workers=$4 h2=0 rrh2=()
	[ "${5:-}" = h2 ] && h2=1 rrh2=(--h2c)
	port_open "$port" && die "port $port is in use: set BASE_PORT"
	case $f in
	nginx-plain) start_nginx "$f" "$port" "$sock" 0 "$h2" ;;
	nginx-keep) start_nginx "$f" "$port" "$sock" 1 "$h2" ;;
	realroot) start_realroot "$f" "$port" "$sock" "$workers" "${rrh2[@]}" ;;
	realroot-nethttp) start_realroot "$f" "$port" "$sock" "$workers" --http1-server net/http ;;
	# The same with a short --queue-timeout, so that the queue overflows:
	# it must answer 503 with Retry-After, never hang.
	realroot-shed) start_realroot "$f" "$port" "$sock" "$workers" --queue-timeout 200ms ;;
	# Fixed params: the script of the workload being measured ($floor_script).
	go-floor)
		start "$f" "$tmp/gofloor" -listen "127.0.0.1:$port" -fastcgi "unix:$sock" -conns "$workers" \
			-root "$realroot_dir" -script "${floor_script[$floor_workload]}" -uri "${url_path[$floor_workload]}"
		wait_port "$port" "$started" "$f"
		;;
	*) die "unknown front $f" ;;
	esac
	front_pid=$started
	front_port=$port
}
stop_front() { stop_port "$front_pid" "$front_port"; }

# --- measuring --------------------------------------------------------------

# parse: wrk's (or fcgiload's) output on stdin -> "req/s p50ms p99ms errors
# requests".
parse() {
	awk '
	function ms(v) {
		if (v ~ /us$/) return v * 0.001
		if (v ~ /ms$/) return v + 0
		if (v ~ /s$/) return v * 1000
		if (v ~ /m$/) return v * 60000
		return v + 0
	}
	/^ +50%/ { p50 = ms($2) }
	/^ +99%/ { p99 = ms($2) }
	/^Requests\/sec:/ { rps = $2 }
	/Non-2xx or 3xx responses:/ { err += $NF }
	/Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
	/^  Errors: / { err += $2 }
	/ requests in / { n = $1 }
	END { printf "%.2f %.3f %.3f %d %d\n", rps, p50, p99, err, n }'
}

# parse_h2 LOG: h2load's output on stdin and its --log-file LOG -> the same
# "req/s p50ms p99ms errors requests", and "starved": 1 when a client got not
# one answer (h2load prints no percentiles; its log lists only answered
# requests, so the percentiles miss those that never were).
parse_h2() {
	local pct
	pct=$(awk '$2 != -1 { print $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "0 0"; exit }
		i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
		i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
		printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000 }')
	awk -v pct="$pct" '
	/^finished in/ { rps = $4 }
	/^requests:/ { n = $8; err += $10 } # failed (errored and timed out included)
	/^status codes:/ { err += $7 + $9 } # 4xx, 5xx
	/^req\/s +:/ { starved = ($3 + 0 == 0) } # min max mean sd over clients
	END { split(pct, p, " "); printf "%.2f %.3f %.3f %d %d %d\n", rps, p[1], p[2], err, n, starved }'
}

# gzip, gzip-static: the same 20 KiB of CSS; gzip-static has its .gz beside it.
declare -A url_path=([hello]=/hello.php [front]='/app/route?id=1' [static]=/static.css
	[gzip]=/app.css [gzip-static]=/app-pre.css [h2-hello]=/hello.php [h2-static]=/static.css)
all_workloads="hello front static gzip gzip-static h2-hello h2-static"
declare -A port_of
declare -A results # "workload front" -> lines "rps p50 p99 err", one per round
declare -A notes   # "workload front" -> a note printed after the row
declare -A probe   # front -> p50 ms of h2c /static.css, one stream at a time
declare -A steal   # "workload front" -> the steal % of each round, one per line
declare -A cpu     # "workload front" -> "front_us php_us" of each round, one per line

# cpu_ticks: "steal total" of /proc/stat's cpu line (0 0 where absent).
cpu_ticks() {
	awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9 + 0, t; f = 1 } END { if (!f) print 0, 0 }' /proc/stat 2>/dev/null ||
		echo 0 0
}

# proc_ticks PID: the CPU clock ticks (user + system) of PID and its
# children (nginx's workers, php-fpm's), 0 for what is gone.
proc_ticks() {
	local p sum=0 t
	for p in "$1" $(pgrep -P "$1" 2>/dev/null); do
		t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || continue
		sum=$((sum + ${t:-0}))
	done
	echo "$sum"
}
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)

# us_per_req TICKS REQ_PER_S SECONDS: CPU µs per request.
us_per_req() {
	awk -v t="$1" -v r="$2" -v s="$3" -v hz="$clk_tck" 'BEGIN {
		if (r > 0 && s > 0) printf "%.1f", t * 1e6 / hz / (r * s); else print "-" }'
}

# steal_pct BEFORE AFTER: the share of CPU time the hypervisor took between
# two cpu_ticks, in %.
steal_pct() {
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
		printf "%.1f", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# measure WORKLOAD FRONT SECONDS: one run; prints "rps p50 p99 err n". It
# fails, showing the output, when the load generator gave no figures.
measure() {
	local w=$1 f=$2 secs=$3 out figures='^Requests/sec:'
	local url="http://127.0.0.1:${port_of[$f]:-}${url_path[$w]}" # after w and f are set
	case $w in
	gzip*) set -- -H 'Accept-Encoding: gzip' ;;
	*) set -- ;;
	esac
	if [ "$f" = limit ]; then
		local script=/hello.php
		[ "$w" = front ] && script=/index.php
		out=$("$tmp/fcgiload" -fastcgi "unix:$main_sock" -c "$CONNS" -d "${secs}s" -max-conns "$WORKERS" \
			-root "$realroot_dir" -script "$script" -uri "${url_path[$w]}" 2>&1) || true
	elif [[ $w == h2-* ]]; then
		figures='^finished in'
		rm -f "$tmp/h2.log"
		out=$("$H2LOAD" -t"$THREADS" -c"$CONNS" -m"$H2_STREAMS" -D"$secs" --log-file="$tmp/h2.log" "$url" 2>&1) || true
	else
		out=$("$WRK" -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency --timeout 5s "$@" "$url" 2>&1) || true
	fi
	[ "$VERBOSE" = 1 ] && printf '%s\n' "--- $w $f" "$out" >&2
	if ! grep -q "$figures" <<<"$out"; then
		printf 'bench: %s via %s gave no figures:\n%s\n' "$w" "$f" "$out" >&2
		return 1
	fi
	if [[ $w == h2-* ]]; then
		parse_h2 "$tmp/h2.log" <<<"$out"
		rm -f "$tmp/h2.log"
	else
		parse <<<"$out"
	fi
}

# median: numbers on stdin -> their median.
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print 0; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# stat WORKLOAD FRONT COLUMN: the median over rounds of column (1 req/s,
# 2 p50, 3 p99); column 4 (errors) is summed; column 5 is the number of
# rounds in which not one request was answered, column 6 of those in which
# some client was never answered (h2load only).
stat() {
	local col=$3
	if [ "$col" = 6 ]; then
		awk 'NF && $6 == 1 { s++ } END { print s + 0 }' <<<"${results[$1 $2]:-}"
	elif [ "$col" = 4 ]; then
		awk '{ s += $4 } END { print s + 0 }' <<<"${results[$1 $2]:-}"
	elif [ "$col" = 5 ]; then
		awk 'NF && $5 == 0 { s++ } END { print s + 0 }' <<<"${results[$1 $2]:-}"
	else
		awk -v c="$col" 'NF { print $c }' <<<"${results[$1 $2]:-}" | median
	fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# --- the run ----------------------------------------------------------------

read -r -a workloads <<<"${WORKLOADS:-$all_workloads}"
for w in "${workloads[@]}"; do
	[ -n "${url_path[$w]:-}" ] || die "WORKLOADS: unknown workload $w ($all_workloads)"
done
# The h2 rows need h2load, nginx's http_v2_module and realroot's --h2c.
h2_skip=""
if [ -z "$H2LOAD" ]; then
	h2_skip="h2load is absent (scripts/deps.sh installs it)"
elif [ "$nginx_h2" = 0 ]; then
	h2_skip="this nginx has no http_v2_module"
elif [ "$rr_h2c" = 0 ]; then
	h2_skip="realroot has no --h2c (HTTP/2 without TLS) yet"
fi
if [ -n "$h2_skip" ]; then
	kept=()
	for w in "${workloads[@]}"; do [[ $w == h2-* ]] || kept+=("$w"); done
	[ ${#kept[@]} = ${#workloads[@]} ] && h2_skip="" # none was asked for
	workloads=("${kept[@]}")
fi
has_workload() { [[ " ${workloads[*]} " == *" $1 "* ]]; }
fronts_of() {
	case $1 in
	hello | front) echo nginx-plain nginx-keep $rr_fronts go-floor limit ;;
	static) echo nginx-plain nginx-keep $rr_fronts ;;
	h2-hello) echo nginx-plain nginx-keep realroot ;;
	h2-static) echo nginx-plain realroot ;;
	*) echo nginx-plain $rr_fronts ;; # gzip, gzip-static: static files, one nginx
	esac
}
# runs FRONT WORKLOAD...: FRONT is measured on one of the (selected) WORKLOADs.
runs() {
	local f=$1 w
	shift
	for w in "$@"; do
		has_workload "$w" && [[ " $(fronts_of "$w") " == *" $f "* ]] && return 0
	done
	return 1
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "# realroot benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, ${cpu:-unknown CPU}, $(uname -sr)"
echo "versions: $("$GO" version | awk '{print $3}'), $("$FPM" -v | head -1 | awk '{print "php-fpm " $2}')," \
	"$("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $("$WRK" --version 2>&1 | head -1 | awk '{print "wrk " $2}')" \
	"${H2LOAD:+, $("$H2LOAD" --version | head -1)}"
echo "command: DURATION=$DURATION ROUNDS=$ROUNDS CONNS=$CONNS THREADS=$THREADS WORKERS=$WORKERS" \
	"${WORKLOADS:+WORKLOADS=\"$WORKLOADS\" }scripts/bench.sh"
if [ "$rr_pool" = 1 ]; then
	echo "realroot: FastCGI pool present (--max-conns $WORKERS, defaults otherwise); limit: fcgiload -max-conns $WORKERS"
else
	echo "realroot: no FastCGI pool yet (no --max-conns): a connection per request"
fi
echo "php-fpm: pm=static, $WORKERS workers, OPcache on, php.ini-production; wrk -t$THREADS -c$CONNS -d${DURATION}s"
if has_workload gzip || has_workload gzip-static; then
	echo "gzip rows: wrk -H 'Accept-Encoding: gzip', $(wc -c <"$rel/public/app.css") bytes of CSS;" \
		"nginx gzip_comp_level 5, realroot's default (gzip 5); gzip-static: a gzip -9 sibling of $(wc -c <"$rel/public/app-pre.css.gz") bytes"
fi
if has_workload h2-hello || has_workload h2-static; then
	echo "h2 rows: HTTP/2 without TLS (realroot --h2c, nginx listen ... http2), h2load -t$THREADS -c$CONNS -m$H2_STREAMS" \
		"-D$DURATION; percentiles from h2load --log-file"
fi
echo

start_fpm fpm "$WORKERS"
main_sock=$fpm_sock
main_fpm=$fpm_pid
port_of[nginx-plain]=$BASE_PORT
port_of[nginx-keep]=$((BASE_PORT + 1))
port_of[realroot]=$((BASE_PORT + 2))
port_of[realroot-nethttp]=$((BASE_PORT + 3))
port_of[go-floor]=$((BASE_PORT + 4))
declare -A floor_script=([hello]=/hello.php [front]=/index.php)
floor_workload=hello

# start_main FRONT WORKLOAD: FRONT on its port in front of the main pool,
# speaking HTTP/2 for the h2 workloads.
start_main() {
	local mode=""
	[[ $2 == h2-* ]] && mode=h2
	floor_workload=$2
	start_front "$1" "${port_of[$1]}" "$main_sock" "$WORKERS" $mode
}

# h2_ok PORT PATH: two requests over h2c, both answered 2xx.
h2_ok() {
	local out
	out=$("$H2LOAD" -n 2 -c 1 "http://127.0.0.1:$1$2" 2>&1) || true
	grep -q '^status codes: 2 2xx' <<<"$out"
}

# Every front must give the same answers before anything is measured, and
# the gzip rows must really be compressed (else their rows say so).
for f in nginx-plain nginx-keep $rr_fronts; do
	start_main "$f" hello
	resp=$(http_get "${port_of[$f]}" /hello.php) || die "$f: GET /hello.php failed"
	grep -q '^HTTP/1\.[01] 200' <<<"$resp" && grep -q 'Hello, world!' <<<"$resp" ||
		die "$f: GET /hello.php: unexpected response:"$'\n'"$resp"
	resp=$(http_get "${port_of[$f]}" '/app/route?id=1') || die "$f: GET /app/route failed"
	grep -q 'front /app/route?id=1 1275' <<<"$resp" || die "$f: front controller: unexpected response:"$'\n'"$resp"
	resp=$(http_get "${port_of[$f]}" /static.css) || die "$f: GET /static.css failed"
	grep -qi '^Content-Length: 1024' <<<"$resp" || die "$f: static: unexpected response:"$'\n'"$resp"
	for w in gzip gzip-static; do
		runs "$f" "$w" || continue
		notes[$w $f]=$(gzip_check "${port_of[$f]}" "${url_path[$w]}" "$rel/public${url_path[$w]}")
	done
	stop_front
	runs "$f" h2-hello h2-static || continue
	start_main "$f" h2-hello
	h2_ok "${port_of[$f]}" /hello.php && h2_ok "${port_of[$f]}" /static.css ||
		die "$f: no 2xx over HTTP/2 without TLS (h2load -n 2 -c 1)"
	# One stream at a time, where nginx's h2c static answer was seen to wait
	# for the client's delayed ACK (~40 ms a request).
	if runs "$f" h2-static && [ "$f" != nginx-keep ]; then
		rm -f "$tmp/h2.log"
		"$H2LOAD" -n 20 -c 1 -m 1 --log-file="$tmp/h2.log" "http://127.0.0.1:${port_of[$f]}/static.css" >/dev/null 2>&1 || true
		if [ -s "$tmp/h2.log" ]; then
			probe[$f]=$(parse_h2 "$tmp/h2.log" </dev/null | awk '{ print $2 }')
		fi
	fi
	stop_front
done

# Each front runs alone: started before its run, stopped after. A front
# that keeps FastCGI connections open (nginx-keep: upstream keepalive 8 per
# nginx worker, kept 60s) holds a php-fpm worker per idle connection, and
# would starve whatever runs next. Each run starts with a 1s warm-up.
for r in $(seq "$ROUNDS"); do
	for w in "${workloads[@]}"; do
		for f in $(fronts_of "$w"); do
			say "round $r/$ROUNDS: $w via $f (1s warm-up, ${DURATION}s)"
			[ "$f" != limit ] && start_main "$f" "$w"
			measure "$w" "$f" 1 >/dev/null || die "$w via $f: the warm-up failed"
			t0=$(cpu_ticks)
			fc0=0
			[ "$f" != limit ] && fc0=$(proc_ticks "$front_pid")
			php0=$(proc_ticks "$main_fpm")
			line=$(measure "$w" "$f" "$DURATION") || die "$w via $f: the run failed"
			steal[$w $f]+="$(steal_pct "$t0" "$(cpu_ticks)")"$'\n'
			rps=${line%% *}
			fus=-
			[ "$f" != limit ] && fus=$(us_per_req $(($(proc_ticks "$front_pid") - fc0)) "$rps" "$DURATION")
			cpu[$w $f]+="$fus $(us_per_req $(($(proc_ticks "$main_fpm") - php0)) "$rps" "$DURATION")"$'\n'
			[ "$f" != limit ] && stop_front
			results[$w $f]+="$line"$'\n'
		done
	done
done

# nginx's h2c static row is not a fair baseline if it waits for delayed ACKs.
if has_workload h2-static && awk -v p="$(stat h2-static nginx-plain 2)" 'BEGIN { exit !(p >= 30) }'; then
	notes[h2-static nginx-plain]+="delayed-ACK-bound (p50 >= 30 ms): not a fair baseline"
fi

printf '%-12s %-16s %10s %9s %9s %7s %7s %8s %8s %9s\n' workload front req/s p50_ms p99_ms errors steal% front_us php_us front/php
stalls=0
stolen=0
for w in "${workloads[@]}"; do
	for f in $(fronts_of "$w"); do
		note=${notes[$w $f]:-}
		if [ "$(stat "$w" "$f" 5)" != 0 ]; then
			note+="${note:+; }stalled: 0 answers in $(stat "$w" "$f" 5) of $ROUNDS rounds"
			stalls=1
		elif [ "$(stat "$w" "$f" 6)" != 0 ]; then
			note+="${note:+; }starved: a client got no answer in $(stat "$w" "$f" 6) of $ROUNDS rounds"
			stalls=1
		fi
		st=$(awk 'NF && $1 > m { m = $1 } END { printf "%.1f", m }' <<<"${steal[$w $f]:-}")
		if awk -v s="$st" -v l="$STEAL_WARN" 'BEGIN { exit !(s > l) }'; then
			note+="${note:+; }stolen"
			stolen=1
		fi
		fus=-
		[ "$f" != limit ] && fus=$(awk 'NF && $1 != "-" { print $1 }' <<<"${cpu[$w $f]:-}" | median)
		pus=$(awk 'NF && $2 != "-" { print $2 }' <<<"${cpu[$w $f]:-}" | median)
		# Each round's ratio, then their median: php-fpm's work per request is
		# fixed, so the ratio cancels the machine's speed of that round.
		ratio=$(awk 'NF == 2 && $1 != "-" && $2 != "-" && $2 > 0 { printf "%.3f\n", $1 / $2 }' <<<"${cpu[$w $f]:-}")
		[ -n "$ratio" ] && ratio=$(median <<<"$ratio")
		printf '%-12s %-16s %10.0f %9.2f %9.2f %7d %7s %8s %8s %9s%s\n' "$w" "$f" \
			"$(stat "$w" "$f" 1)" "$(stat "$w" "$f" 2)" "$(stat "$w" "$f" 3)" "$(stat "$w" "$f" 4)" "$st" "$fus" "$pus" "${ratio:--}" "${note:+  $note}"
	done
done
echo "(median of $ROUNDS rounds; errors: non-2xx + socket errors + timeouts, summed; limit = fcgiload, no HTTP;"
echo " steal%: the most CPU time the hypervisor took from this machine in one round, from /proc/stat;"
echo " go-floor: internal/gofloor, fixed params and no routing: what a Go front costs before realroot's own work;"
echo " front_us, php_us: CPU µs per request of the front (its processes) and of php-fpm, from /proc; the"
echo " two cores bound every row, so a µs spent by one process is a µs the others lack;"
echo " front/php: front_us over php_us, per round: php-fpm's work per request is fixed, so this compares"
echo " fronts across rounds and runs whatever the machine's speed was)"
if [ "$stolen" = 1 ]; then
	echo "(stolen: a round lost over $STEAL_WARN% of the CPU to other guests: its front had less machine than the"
	echo " others, so the ratios with that row are unreliable. Run again when the host is quieter.)"
fi
if [ "$stalls" = 1 ]; then
	echo "(stalled: every client waited the whole run; starved: some did, and p50/p99 cover only the answered ones;"
	echo " wrk 4.1 and h2load count no error for a request never answered. nginx-keep does this when its kept"
	echo " connections outnumber php-fpm's workers: see the saturation run.)"
fi
if [ -n "$h2_skip" ]; then
	echo "(h2 rows skipped: $h2_skip)"
fi
for f in nginx-plain realroot; do
	[ -n "${probe[$f]:-}" ] || continue
	printf '(h2c /static.css one stream at a time, h2load -c1 -m1 -n20: %s p50 %.2f ms' "$f" "${probe[$f]}"
	if awk -v p="${probe[$f]}" 'BEGIN { exit !(p >= 30) }'; then
		printf ': a delayed-ACK wait, so %s is not a fair h2c baseline with few streams in flight)\n' "$f"
	else
		printf ')\n'
	fi
done
echo

echo "ratios, realroot / other (req/s: higher is better; p99: lower is better)"
printf '%-12s %-16s %-16s %-16s %-16s %-16s %-16s %-14s\n' workload front 'req/s vs plain' 'req/s vs keep' 'p99 vs plain' 'p99 vs keep' 'req/s vs limit' 'req/s vs floor'
for w in "${workloads[@]}"; do
	for rr in $(fronts_of "$w"); do
		[[ $rr == realroot* ]] || continue
		lim="-" floor="-"
		[[ " $(fronts_of "$w") " == *" limit "* ]] && lim=$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" limit 1)")
		[[ " $(fronts_of "$w") " == *" go-floor "* ]] && floor=$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" go-floor 1)")
		printf '%-12s %-16s %-16s %-16s %-16s %-16s %-16s %-14s\n' "$w" "$rr" \
			"$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" nginx-plain 1)")" \
			"$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" nginx-keep 1)")" \
			"$(ratio "$(stat "$w" "$rr" 3)" "$(stat "$w" nginx-plain 3)")" \
			"$(ratio "$(stat "$w" "$rr" 3)" "$(stat "$w" nginx-keep 3)")" "$lim" "$floor"
	done
done
if has_workload gzip || has_workload gzip-static || has_workload h2-static; then
	echo "(gzip, gzip-static and h2-static run one nginx, nginx-plain: static files are served alike by both)"
fi
echo

# target NAME RATIO OP BOUND: one PASS/MISS line.
target() {
	if [ "$2" = - ]; then
		printf '  n/a   %-44s (the other front answered nothing: stalled)\n' "$1"
		return
	fi
	awk -v n="$1" -v r="$2" -v op="$3" -v b="$4" 'BEGIN {
		ok = (op == ">=") ? (r >= b) : (r <= b)
		miss = (op == ">=") ? (b - r) / b * 100 : (r - b) / b * 100
		if (ok) printf "  PASS  %-44s %5.2fx (target %s %.2fx)\n", n, r, op, b
		else printf "  MISS  %-44s %5.2fx (target %s %.2fx; short by %.0f%%)\n", n, r, op, b, miss
	}'
}
if has_workload hello || has_workload front || has_workload static; then
	for rr in $rr_fronts; do
		echo "targets, $rr"
		for w in hello front; do
			has_workload "$w" || continue
			target "$w: req/s vs nginx-keep" "$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" nginx-keep 1)")" ">=" 1.0
			target "$w: p99 vs nginx-plain" "$(ratio "$(stat "$w" "$rr" 3)" "$(stat "$w" nginx-plain 3)")" "<=" 1.0
			target "$w: req/s vs limit (direct FastCGI)" "$(ratio "$(stat "$w" "$rr" 1)" "$(stat "$w" limit 1)")" ">=" 0.85
		done
		if has_workload static; then
			static_best=$(printf '%s\n%s\n' "$(stat static nginx-plain 1)" "$(stat static nginx-keep 1)" | sort -g | tail -1)
			target "static: req/s vs nginx (the better config)" "$(ratio "$(stat static "$rr" 1)" "$static_best")" ">=" 0.7
		fi
		echo
	done
fi

# --- saturation -------------------------------------------------------------

stop "$main_fpm" # only the saturation pool runs from here
[ "${SATURATION:-1}" = 0 ] && exit 0

# wrk 4.1 never counts a request that gets no answer at all, so the
# saturation run uses fcgiload's HTTP mode: status codes, 503s with
# Retry-After, and the requests and clients left waiting.
echo "saturation: php-fpm pm.max_children=$SAT_WORKERS, $SAT_CONNS clients (fcgiload -http), /sleep.php (50 ms), ${SAT_DURATION}s each"
start_fpm fpm-sat "$SAT_WORKERS"
sat_sock=$fpm_sock
sat_port=$((BASE_PORT + 10))
sat_fronts=(realroot)
[ "$rr_queue" = 1 ] && sat_fronts+=(realroot-shed)
sat_fronts+=(nginx-plain nginx-keep)
for f in "${sat_fronts[@]}"; do
	start_front "$f" "$sat_port" "$sat_sock" "$SAT_WORKERS"
	say "saturation via $f (${SAT_DURATION}s)"
	out=$("$tmp/fcgiload" -http "http://127.0.0.1:$sat_port/sleep.php" -c "$SAT_CONNS" -d "${SAT_DURATION}s" -hang 5s 2>&1) ||
		die "fcgiload -http: $out"
	[ "$VERBOSE" = 1 ] && printf '%s\n' "--- saturation $f" "$out" >&2
	rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	printf '%-12s %8s req/s  %s\n' "$f" "${rps:-?}" "$(sed -n 's/^  codes: //p' <<<"$out")"
	printf '%-12s %s\n' "" "$(sed -n 's/^  \(hung: .*\)/\1/p' <<<"$out")"
	# php-fpm's view 1s after the load, with the front still up: a front
	# holding idle kept connections holds workers (php-fpm counts a worker
	# waiting on a kept connection as idle, so only a status request that
	# gets no worker shows it).
	sleep 1
	if st=$("$tmp/fcgiload" -fastcgi "unix:$sat_sock" -get /fpm-status -timeout 3s 2>&1); then
		printf '%-12s php-fpm 1s after: %s\n' "" "$(awk -F': +' '
			/^idle processes/ { i = $2 } /^active processes/ { a = $2 } /^listen queue:/ { q = $2 }
			END { printf "idle=%s active=%s (one is this status request) listen_queue=%s", i, a, q }' <<<"$st")"
	else
		printf '%-12s php-fpm 1s after: status page unanswered within 3s: every worker held\n' ""
	fi
	stop_front
	sleep 1 # let php-fpm finish what the front left
done
