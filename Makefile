# realroot. Targets need Go and GNU make; scripts/deps.sh installs the rest
# (php-fpm 8.2, nginx, wrk, h2load) with apt-get when missing.

GO ?= go

.PHONY: all demo test fuzz bench fmt deps

all: test

deps:
	scripts/deps.sh

# DEMO_FLAGS passes flags on to realroot demo: DEMO_FLAGS=--listen=127.0.0.1:8081
# when 8080 is taken.
demo: deps
	$(GO) run ./cmd/realroot demo $(DEMO_FLAGS)

# The CI command (.ci/run) and the README's: formatting and vet findings fail
# the build before the tests run. The command's and proxy's tests run a second
# time with http1-server = net/http (realroot processes inherit the
# environment; proxy's test servers are then Go's).
test: deps
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt: needs formatting (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	REALROOT_HTTP1_SERVER=net/http $(GO) test -race -count=1 ./cmd/realroot ./proxy
	@$(MAKE) --no-print-directory fuzz

# Every fuzz target, each for a number of executions (about 10 s here; plain
# go test above runs only their seeds). Counts, not durations: a duration's
# deadline races the fuzz coordinator, which then fails with "context deadline
# exceeded" and no crasher when a worker is busy (minimizing a new input) as
# it expires (golang/go#75804, fixed in Go 1.27). FUZZTIME=30s (or 5000x)
# gives every target that budget instead; FUZZTIME=0 skips. A crasher lands
# in the package's testdata/fuzz and fails.
FUZZTIME ?=
FUZZ_TARGETS = \
	./resolve:FuzzCleanPath:100000x \
	./proxy:FuzzSplitScript:50000x ./proxy:FuzzRoute:40000x \
	./proxy/fcgi:FuzzCGIHeader:50000x ./proxy/fcgi:FuzzResponse:40000x ./proxy/fcgi:FuzzParams:50000x \
	./conf:FuzzLoadFile:20000x ./conf:FuzzLoadEnv:30000x \
	./proxy/h1:FuzzServe:25000x

fuzz:
	@if [ "$(FUZZTIME)" != 0 ]; then for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; ft='$(FUZZTIME)'; budget=$${ft:-$${rest##*:}}; \
		echo "fuzz $$pkg $$name for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$budget -fuzzminimizetime 5s $$pkg >/tmp/realroot-fuzz.$$$$ 2>&1 \
			|| { cat /tmp/realroot-fuzz.$$$$; rm -f /tmp/realroot-fuzz.$$$$; exit 1; }; \
		tail -1 /tmp/realroot-fuzz.$$$$; rm -f /tmp/realroot-fuzz.$$$$; \
	done; fi

bench: deps
	scripts/bench.sh

fmt:
	gofmt -w .
