# realroot. Targets need Go and GNU make; scripts/deps.sh installs the rest
# (php-fpm 8.2, nginx, wrk, h2load) with apt-get when missing.

GO ?= go

.PHONY: all demo test fuzz bench fmt deps

all: test

deps:
	scripts/deps.sh

demo: deps
	$(GO) run ./cmd/realroot demo

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

# Every fuzz target for FUZZTIME (plain go test above runs only their seeds);
# FUZZTIME=0 skips. A crasher lands in the package's testdata/fuzz and fails.
FUZZTIME ?= 10s
FUZZ_TARGETS = \
	./resolve:FuzzCleanPath \
	./proxy:FuzzSplitScript ./proxy:FuzzRoute \
	./proxy/fcgi:FuzzCGIHeader ./proxy/fcgi:FuzzResponse ./proxy/fcgi:FuzzParams \
	./conf:FuzzLoadFile ./conf:FuzzLoadEnv \
	./proxy/h1:FuzzServe

fuzz:
	@if [ "$(FUZZTIME)" != 0 ]; then for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/realroot-fuzz.$$$$ 2>&1 \
			|| { cat /tmp/realroot-fuzz.$$$$; rm -f /tmp/realroot-fuzz.$$$$; exit 1; }; \
		tail -1 /tmp/realroot-fuzz.$$$$; rm -f /tmp/realroot-fuzz.$$$$; \
	done; fi

bench: deps
	scripts/bench.sh

fmt:
	gofmt -w .
