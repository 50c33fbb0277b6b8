# Everything a fresh machine needs comes from here: `make test` and `make demo` set up
# the venv, Debian packages, the Go-built binaries and the container images first (each step
# is cached).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)

.PHONY: setup debs vendor toolchain images test lint format demo up down status clean e2e

setup: debs $(STAMP) vendor toolchain images

debs:
	@hack/debian-packages.sh

$(STAMP): pyproject.toml constraints.txt
	@rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# hls.js for the viewer page, pinned by web/package-lock.json (npm ci), copied into the
# recorder package; the recorder image build runs the same (images.py)
vendor: $(STAMP)
	$(BIN)/python -m haven_localcluster.vendor

# Traefik (the ingress tests' and the demo's controller) builds beside the cluster's binaries at
# low priority: it takes the CPU those builds leave idle (module downloads, single-threaded links).
toolchain: $(STAMP)
	@nice -n 19 $(BIN)/haven-localcluster build traefik & bg=$$!; \
	$(BIN)/haven-localcluster build; rc=$$?; \
	wait $$bg && exit $$rc

images: toolchain
	$(BIN)/haven-localcluster images

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# actionlint, built from the Go module proxy (localcluster/gobuild/actionlint) and cached
	$$($(BIN)/haven-localcluster build actionlint | awk '$$1 == "actionlint" {print $$2}') .github/workflows/*.yml

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The end-to-end suite against an existing cluster (README: "Run the e2e suite on your
# cluster"); its own pytest configuration keeps the local cluster's fixtures out:
#   make e2e KUBECONFIG=... HAVEN_OPERATOR_IMAGE=... HAVEN_RECORDER_IMAGE=... \
#            HAVEN_LIVEKIT_IMAGE=... HAVEN_TESTKIT_IMAGE=...    (E2E_ARGS: more pytest arguments)
e2e: $(STAMP)
	$(BIN)/pytest -c tests/e2e/pytest.ini tests/e2e $(if $(KUBECONFIG),--kubeconfig=$(KUBECONFIG)) $(E2E_ARGS)

demo: setup
	$(BIN)/haven-localcluster demo

up: setup
	$(BIN)/haven-localcluster up

down status: $(STAMP)
	$(BIN)/haven-localcluster $@

clean:
	-$(BIN)/haven-localcluster down --purge
	rm -rf $(VENV)
