# realroot. Targets need Go and GNU make; scripts/deps.sh installs the rest
# (php-fpm 8.2, nginx, wrk, h2load) with apt-get when missing.

GO ?= go

.PHONY: all demo test bench fmt deps

all: test

deps:
	scripts/deps.sh

demo: deps
	$(GO) run ./cmd/realroot demo

# The CI command (.ci/run) and the README's: formatting and vet findings fail
# the build before the tests run.
test: deps
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt: needs formatting (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

bench: deps
	scripts/bench.sh

fmt:
	gofmt -w .
