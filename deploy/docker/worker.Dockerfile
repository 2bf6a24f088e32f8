# regionfarm render worker image: `regionfarm worker` on NVIDIA GPUs (torch CUDA build, diffusers).
# Build from the repository root (the build context):
#   docker build -f deploy/docker/worker.Dockerfile -t regionfarm-worker .
# What goes into the context is listed in worker.Dockerfile.dockerignore, next to this file.
#
# The CUDA *base* flavour is enough: the torch wheels bring their own CUDA libraries (cuDNN,
# cuBLAS, ...) as pip packages; the image only needs the NVIDIA container variables and a driver
# on the host new enough for TORCH_CUDA (cu128: driver >= 570, or 525+ with forward compat).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${CUDA_IMAGE}

# The pin of the Makefile; the CUDA build of the same version, from the PyTorch index.
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
# Ubuntu 24.04's own Python (3.12; the package needs >= 3.11): security updates from the distro,
# no third-party apt source.
ARG PYTHON=python3.12

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/regionfarm/bin:$PATH \
    REGIONFARM_DATA_DIR=/var/lib/regionfarm \
    REGIONFARM_MODEL_CACHE=/var/cache/regionfarm/models \
    HF_HOME=/var/cache/regionfarm/huggingface

RUN apt-get update \
    && apt-get install -y --no-install-recommends ${PYTHON} ${PYTHON}-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 regionfarm \
    && useradd --system --uid 10001 --gid regionfarm --home-dir /var/lib/regionfarm \
       --create-home --shell /usr/sbin/nologin regionfarm \
    && ${PYTHON} -m venv /opt/regionfarm \
    && mkdir -p /var/cache/regionfarm/models /var/cache/regionfarm/huggingface \
    && chown -R regionfarm:regionfarm /var/cache/regionfarm

# torch first and on its own layer (about 3 GB, changes only with the pin): the worker extra's
# range admits it, so the install below keeps this CUDA build instead of fetching the CPU one.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"

WORKDIR /src
# The package: its metadata, then its packages (pyproject's packages.find.include).
COPY pyproject.toml README.md LICENSE ./
COPY api ./api
COPY cli ./cli
COPY farm ./farm
COPY schemas ./schemas
COPY worker ./worker
RUN pip install ".[api,worker]" \
    && python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_VERSION}') else 1)" \
    && rm -rf /src

USER regionfarm
WORKDIR /var/lib/regionfarm
# Model weights (hub downloads under HF_HOME, built-ins under REGIONFARM_MODEL_CACHE): keep them
# on a volume so that a restarted worker loads in seconds instead of downloading again.
VOLUME ["/var/cache/regionfarm"]
EXPOSE 9200

# The metrics port opens once the model is loaded: a TCP check is "loaded and serving".
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 9200), 4).close()"]

# One worker process per visible GPU; compose and Kubernetes pin one GPU per container instead.
CMD ["regionfarm", "worker", "--model", "sd15-lcm", "--gpus", "all", "--metrics-port", "9200"]
