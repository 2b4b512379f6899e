# Stevedore — build, run and test.
#
#   make demo    set up this machine, start Stevedore and pull an image (the quick start)
#   make test    run the whole test suite (what CI runs)
#   make up      build and start the gateway (embedded NATS) and the workers in the background
#   make down    stop them
#   make bench   run the benchmarks
#   make lint    gofmt + go vet

GO        ?= go
BIN       ?= $(CURDIR)/bin
ROOT      ?= /var/lib/stevedore
FETCHERS  ?= 2
export STEVEDORE_ROOT := $(ROOT)

CMDS := gateway fetcher ctl $(notdir $(wildcard cmd/unpacker cmd/executor))

.PHONY: all build up down restart demo deps test bench lint clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS)) ./internal/tools/mkimage

up: build
	BIN=$(BIN) FETCHERS=$(FETCHERS) scripts/up.sh

down:
	scripts/down.sh

restart: down up

deps:
	scripts/deps.sh

demo: deps build
	BIN=$(BIN) FETCHERS=$(FETCHERS) scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh
	scripts/bench-containerd.sh

bench-containerd:
	scripts/bench-containerd.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf $(BIN)
