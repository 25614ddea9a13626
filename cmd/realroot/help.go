package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"realroot/conf"
)

// manual writes realroot --help: a man page whose OPTIONS come from
// conf.FlagSet, so that they cannot drift from the flags.
func manual(w io.Writer) {
	fmt.Fprint(w, `NAME
    realroot - a front server for PHP-FPM that pins every request to one release

SYNOPSIS
    realroot [serve] [OPTIONS] [-- PHP-FPM-COMMAND [ARG...]]
    realroot check [OPTIONS]
    realroot switch RELEASE_DIR [--link PATH] [--wait --admin ADDR
                    [--timeout DURATION]]
    realroot releases [--link PATH] [--admin ADDR] [--prune [--keep N]
                      [--dry-run]]
    realroot version
    realroot demo [--listen ADDR] [--dir DIR] [--php-fpm BIN]

DESCRIPTION
    realroot serves HTTP in front of php-fpm for a docroot reached through
    symlinks (/srv/app/current/public, current -> releases/N). Each request
    is pinned at arrival to the release current then: its routing, its static
    files and its SCRIPT_FILENAME and DOCUMENT_ROOT all come from that release,
    so a deploy's symlink switch never serves a mix of two releases. Routing
    is the canonical nginx + php-fpm one: an existing file is served, a
    script runs in php-fpm, a directory gets its index, anything else goes to
    the front controller.

    serve (the default) runs the server. With -- and a command, realroot is
    a container's entrypoint: it starts php-fpm as its child, serves once
    php-fpm accepts, forwards signals to it, reaps zombies when it is PID 1,
    and exits with php-fpm's status if php-fpm dies.

    With managed-pool, realroot runs php-fpm itself instead (not with
    fastcgi or --): one master per release, from a pool configuration
    template, started before the release takes traffic and stopped once its
    last request is done, so that no cache of PHP outlives its release
    (docs/managed-pools.md).

    check validates the configuration, resolves the root and runs one
    FastCGI request on every php-fpm address (ping-path when set, else a
    missing script: any answer, even 404, proves php-fpm answers). It prints
    each step as "ok" or "failed: reason" and exits 1 if one failed; use it
    as a readiness probe. With managed-pool it runs php-fpm -t on the
    template made for the current release instead.

    With admin set, serve also answers /metrics (Prometheus), /status
    (JSON: the current release, those draining and drained), /healthz and
    /readyz on that address, loopback only. switch and releases ask it.

    switch points the link (--link, default "current" beside the release's
    parent) at RELEASE_DIR atomically (a new symlink renamed over it); with
    --wait it asks the server at --admin until it serves the release and the
    previous one has drained. releases lists the releases beside the link's
    target with the server's view of each (current, draining, drained), and
    --prune deletes old ones, keeping the --keep newest and any current or
    busy one. Both read REALROOT_LINK and REALROOT_ADMIN; "realroot switch
    --help" and "realroot releases --help" print their flags.

    Every setting is read, lowest precedence first, from its default, the
    config file (--config), the environment and the flags. The file is TOML
    with keys named like the flags; unknown keys are errors. List flags
    repeat; in the environment their items are separated by commas (by
    newlines for param, cache-control, header and internal-location).

OPTIONS
`)
	def := conf.Default()
	fs := conf.FlagSet(&def)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		head := "    --" + f.Name
		if name != "" {
			head += " " + name
		}
		text := usage + ". Environment " + conf.EnvName(f.Name)
		if f.DefValue != "" {
			text += "; default " + f.DefValue
		}
		fmt.Fprintf(w, "%s\n%s\n", head, wrap(text+".", "        ", 78))
	})
	fmt.Fprint(w, `    -h, --help
        Print this manual.

SIGNALS
    SIGTERM, SIGINT, SIGQUIT
        Stop accepting connections, let in-flight requests finish (at most
        shutdown-timeout), then exit 0. A second one closes the connections
        at once. With a php-fpm child, php-fpm then gets SIGQUIT (its
        graceful stop) and realroot exits with its status.
    SIGHUP
`)
	var names []string
	for _, s := range restartOnly {
		names = append(names, s.name)
	}
	fmt.Fprintln(w, wrap("Re-read the configuration (file, environment, the original flags) "+
		"and swap it in without dropping a connection or a request. An invalid configuration "+
		"is rejected, its errors logged, and the running one kept. "+
		strings.Join(names[:len(names)-1], ", ")+" and "+names[len(names)-1]+" need a restart: "+
		"a reload keeps their running values. The tls-cert and tls-key files are read again "+
		"(new connections get the new certificates), but turning TLS on or off needs a restart. "+
		"A php-fpm child gets SIGUSR2 (its graceful reload).",
		"        ", 78))
	fmt.Fprint(w, `    SIGUSR1
        Reopen log-file and access-log-file (for logrotate). A php-fpm
        child gets SIGUSR1 (it reopens its logs).
    SIGUSR2
        Forwarded to a php-fpm child.

EXIT STATUS
    0 after a graceful stop, 1 on an error, 2 on a configuration error; in
    entrypoint mode, php-fpm's status when it died (128+N for signal N).

EXAMPLES
    Serve a Capistrano or Deployer layout through Debian's php-fpm:
        realroot --root /srv/app/current/public \
                 --fastcgi unix:/run/php/php8.2-fpm.sock --listen 0.0.0.0:80

    The same from a file, with a deny rule given on the command line:
        realroot --config /etc/realroot.toml --deny /dokuwiki/data

    HTTPS and HTTP/2 on 443 with a certificate per name (by SNI), and
    port 80 redirecting to it:
        realroot --root /srv/app/current/public --listen 0.0.0.0:443 \
                 --tls-cert /etc/ssl/a.pem --tls-key /etc/ssl/private/a.key \
                 --tls-cert /etc/ssl/b.pem --tls-key /etc/ssl/private/b.key \
                 --https-redirect 0.0.0.0:80

    Container entrypoint: start php-fpm, serve when it accepts:
        realroot --root /app/current/public --fastcgi unix:/run/php/fpm.sock \
                 --listen 0.0.0.0:8080 -- php-fpm8.2 -F -y /etc/php-fpm.conf

    Managed mode: a fresh php-fpm master per release, from a pool template:
        realroot --root /srv/app/current/public \
                 --managed-pool /etc/realroot/pool.conf --warm /

    Check a configuration (e.g. as a readiness probe):
        REALROOT_CONFIG=/etc/realroot.toml realroot check

    Reload after editing the file; reopen logs after rotating them:
        kill -HUP $(pidof realroot); kill -USR1 $(pidof realroot)

    Deploy: switch to a new release, wait until the old one is idle, then
    delete all but the 5 newest releases:
        realroot switch /srv/app/releases/20261122120000 --wait \
                 --admin 127.0.0.1:9180 --timeout 120s
        realroot releases --link /srv/app/current --admin 127.0.0.1:9180 \
                 --prune --keep 5

    An /etc/realroot.toml:
        listen = ["0.0.0.0:80"]
        root = "/srv/app/current/public"
        fastcgi = "unix:/run/php/php8.2-fpm.sock"
        max-conns = 16            # php-fpm's pm.max_children
        max-body-size = "32m"
        deny = ["/dokuwiki/data", "/.git"]
        cache-control = [".css=public, max-age=31536000, immutable"]
        access-log = "combined"
        access-log-file = "/var/log/realroot/access.log"
        admin = "127.0.0.1:9180"  # /metrics, /status, /readyz
        warm = ["/"]              # before a new release gets traffic
        [param]
        APP_ENV = "production"

SEE ALSO
    docs/configuration.md, docs/running.md, docs/deploying.md,
    docs/migrating.md, docs/tls.md, docs/managed-pools.md
`)
}

// wrap breaks text into lines of at most width columns (unless a word is
// longer), each starting with indent.
func wrap(text, indent string, width int) string {
	var b strings.Builder
	line := indent
	for _, word := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(word) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += word
	}
	b.WriteString(line)
	return b.String()
}
