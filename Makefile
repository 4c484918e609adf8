# kitnats — the two commands a newcomer needs are `make demo` and `make test`.

GO          ?= go
PKGS        ?= ./...
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHSTAT   ?= golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
BENCHTIME   ?= 1s
BENCHCOUNT  ?= 1
FUZZTIME    ?= 10s

.PHONY: all demo demo-registry test lint bench benchstat cover fuzz tidy

all: test

## demo: run the quickstart on an embedded NATS server (nothing to install)
demo:
	$(GO) run ./examples/quickstart

## demo-registry: the registry alone — instances join, leave cleanly, crash
demo-registry:
	$(GO) run ./examples/registry

## test: go vet, then every test with the race detector (the HTTP/gRPC example module too)
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	cd examples/transports && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 10m ./...

## lint: go vet and staticcheck (fetched through the module proxy)
lint:
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

## bench: every benchmark with its baseline, -benchmem; output in bench.txt
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) $(PKGS) | tee bench.txt

## benchstat: compare bench.txt to old.txt (make bench twice, renaming in between)
benchstat:
	$(GO) run $(BENCHSTAT) old.txt bench.txt

## cover: test coverage per package, HTML report in cover.html
cover:
	$(GO) test -race -count=1 -coverprofile=cover.out $(PKGS)
	$(GO) tool cover -func=cover.out | tail -n 1
	$(GO) tool cover -html=cover.out -o cover.html

## fuzz: a short run of every fuzz target (FUZZTIME each)
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

tidy:
	$(GO) mod tidy
