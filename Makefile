# skrfs: the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs (Go modules, Azurite via npm, Debian
# packages via apt-get) when it is missing.

SHELL      := /bin/bash
GO         ?= go
BIN        := bin/skrfs
CACHE      := $(CURDIR)/.cache
GOBIN_DIR  := $(CACHE)/bin
STATICCHECK_VERSION := v0.8.2
# Bounded fuzzing in `make test`, by execution count: a duration-based
# -fuzztime races Go's fuzz coordinator and fails spuriously with "context
# deadline exceeded" (golang/go#75804, fixed in Go 1.27). Longer runs:
# make fuzz FUZZ_SCALE=100
FUZZ_SCALE ?= 1
# make test halves the counts (FUZZ_DIV=1 for the full bounded run): CI must stay under 20 minutes.
FUZZ_DIV   ?= 2
PYTHON     := /usr/bin/python3

.PHONY: all build test test-integration test-rest test-long unit integration fuzz pyvectors demo bench lint tidy-check fmt deps deps-apt deps-azurite deps-bench azurite clean

all: build

## build: a static binary (no cgo), as release images ship it.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/skrfs

## test: everything CI runs: vet, unit and integration tests with -race,
## bounded fuzzing, and the independent Python decryptor on the golden vectors.
## The integration packages (real mounts, the daemon, Azurite: mostly
## waiting) run beside the other packages, then the bounded fuzzing (one
## fuzzing process, leaving a core to the mounts) and the Python cross-check.
test: deps tidy-check
	$(GO) vet ./...
	$(MAKE) --no-print-directory -j2 test-integration test-rest

test-integration:
	$(GO) test -race -count=1 -timeout 20m ./integration/...

test-rest:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '^github.com/skrfs/skrfs/integration')
	$(MAKE) --no-print-directory fuzz FUZZ_FLAGS=-parallel=1
	$(MAKE) --no-print-directory pyvectors

## test-long: the large cases that make test scales down: kill -9 during a
## 1 GiB write (make test: 64 MiB). The 1 GiB and 4 GiB write throughput and
## RSS figures are in make bench (group writes).
test-long: deps
	SKRFS_CRASH_MIB=1024 $(GO) test -race -count=1 -timeout 30m -run 'TestKillDuringWrite' -v ./integration/writes

unit:
	$(GO) test -race -count=1 -short . ./crypto/... ./blob/... ./keyrelease/... ./internal/... ./cmd/... ./deliver/...

integration: deps
	$(GO) test -race -count=1 ./integration/...

fuzz:
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $$((500000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $$((150000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzVerifyManifest$$' -fuzztime $$((100000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParseHeaderV2$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzOpenV2$$' -fuzztime $$((150000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzPlainSizeFromMetadata$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./fs
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzUnwrapPad$$' -fuzztime $$((500000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./crypto/keywrap
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzPolicy$$' -fuzztime $$((400000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/policy
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $$((250000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./internal/config
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzVerifyReport$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/evidence
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParseTHIM$$' -fuzztime $$((100000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/evidence
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzVerifyEndorsement$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/evidence
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParseHCLReport$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/evidence
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzEnvelope$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/attest/cvm
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzVerifyTPM$$' -fuzztime $$((100000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/attest/cvm
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzEvidence$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/attest
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzAttestResponse$$' -fuzztime $$((250000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/maa
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzReleaseResponse$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/akv
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzReleasePayload$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/akv
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParseKey$$' -fuzztime $$((300000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzAPIRequest$$' -fuzztime $$((100000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./internal/sidecar
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzUnwrap$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/wrapkey
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzRedactPayload$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./fs
	$(GO) test $(FUZZ_FLAGS) -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $$((200000 * $(FUZZ_SCALE) / $(FUZZ_DIV)))x ./keyrelease/evidence/sgxquote

## pyvectors: the Python decryptor, written from docs/format.md alone,
## decrypts the frozen golden vectors and round-trips its own objects.
pyvectors: deps-apt
	$(PYTHON) integration/pydecrypt/skrfs_object.py check-vectors crypto/testdata/v1
	$(PYTHON) integration/pydecrypt/skrfs_manifest.py check-vectors crypto/testdata/v2/manifest
	$(PYTHON) integration/pydecrypt/skrfs_object.py check-vectors crypto/testdata/v2/objects
	$(PYTHON) -m unittest discover -s integration/pydecrypt -q

## demo: the embedded default: the devstack (local MAA, Key Vault, IMDS and a
## fake SEV-SNP TEE; TEE=cvm: a fake Azure confidential VM on swtpm) in-process,
## mounted at ./skrfs-demo until Ctrl-C. Its state (CA, keys, data) lives in
## this checkout's .cache/demo-state (-cvm for TEE=cvm), which the demo
## prints; rm -rf it for a fresh start.
TEE ?= snp
DEMO_STATE ?= $(CACHE)/demo-state$(if $(filter cvm,$(TEE)),-cvm)
demo: build deps-apt
	$(BIN) demo --tee $(TEE) --state $(DEMO_STATE) skrfs-demo

## bench: benchmarks; figures are ratios against a baseline measured in the
## same run (median of 3 runs, with min and max). SKRFS_BENCH_SIZE sets the
## Azure download size (default 1 GiB).
bench: deps deps-bench
	@mkdir -p $(CACHE)
	$(GO) test -run '^$$' -bench . -count 3 -benchtime 1s ./crypto/ | tee $(CACHE)/bench-crypto.txt
	$(GO) test -run '^$$' -bench BenchmarkDownload -count 3 -benchtime 2x -timeout 60m ./blob/azblob/ | tee $(CACHE)/bench-azblob.txt
	@$(PYTHON) scripts/benchratio.py $(CACHE)/bench-crypto.txt $(CACHE)/bench-azblob.txt | tee $(CACHE)/bench.md
	$(GO) run ./integration/bench -out $(CACHE)/bench
	$(GO) test -run '^$$' -bench BenchmarkFirstListing -benchtime 1x -count 3 -timeout 30m ./integration/ | tee $(CACHE)/bench-listing.txt

# The peers the benchmarks compare with, from Debian.
deps-bench: deps-apt
	@missing=""; for tool in gocryptfs rclone fio; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

lint: tidy-check $(GOBIN_DIR)/staticcheck
	$(GO) vet ./...
	$(GOBIN_DIR)/staticcheck ./...

## tidy-check: fail when `go mod tidy` would change go.mod or go.sum (a
## direct dependency marked indirect, an unused requirement, a missing sum).
tidy-check:
	@if ! out=$$($(GO) mod tidy -diff 2>&1); then \
	  echo "$$out"; echo "go.mod/go.sum are not tidy: run 'go mod tidy', check that pinned versions stay, and commit"; exit 1; \
	fi

$(GOBIN_DIR)/staticcheck:
	GOBIN=$(GOBIN_DIR) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt:
	gofmt -s -w $$(git ls-files '*.go')

deps: deps-apt deps-azurite
	$(GO) mod download

# Debian packages: python3 and python3-cryptography for the independent
# decryptor (python3 also drives random-offset writes through a writable
# mount), fuse3 for fusermount3 (unmount as non-root), npm for Azurite,
# and the unmodified programs the filesystem tests read and write through
# the mount (sqlite3, rsync, tar...).
deps-apt:
	@missing=""; \
	test -x $(PYTHON) || missing="$$missing python3"; \
	$(PYTHON) -c 'import cryptography' 2>/dev/null || missing="$$missing python3-cryptography"; \
	command -v fusermount3 >/dev/null || missing="$$missing fuse3"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v swtpm >/dev/null || missing="$$missing swtpm"; \
	for tool in sqlite3 rsync openssl unzip tar; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deps-azurite: deps-apt
	@scripts/install-azurite.sh

azurite: deps-azurite

clean:
	rm -rf bin
