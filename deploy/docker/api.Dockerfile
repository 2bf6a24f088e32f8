# regionfarm API image: the REST API (`regionfarm api`, gunicorn) and the webhook worker
# (`regionfarm worker --webhooks`). The `api` extra only: no torch, no CUDA, a few hundred MB.
# Build from the repository root (the build context):
#   docker build -f deploy/docker/api.Dockerfile -t regionfarm-api .
# What goes into the context is listed in api.Dockerfile.dockerignore, next to this file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/regionfarm/bin:$PATH \
    REGIONFARM_DATA_DIR=/var/lib/regionfarm

# An unprivileged user with a fixed uid, so volumes and mounted secrets can be given to it.
RUN groupadd --system --gid 10001 regionfarm \
    && useradd --system --uid 10001 --gid regionfarm --home-dir /var/lib/regionfarm \
       --create-home --shell /usr/sbin/nologin regionfarm \
    && python -m venv /opt/regionfarm

WORKDIR /src
# The package: its metadata, then its packages (pyproject's packages.find.include).
COPY pyproject.toml README.md LICENSE ./
COPY api ./api
COPY cli ./cli
COPY farm ./farm
COPY schemas ./schemas
COPY worker ./worker
RUN pip install ".[api]" \
    && rm -rf /src

USER regionfarm
WORKDIR /var/lib/regionfarm
EXPOSE 8000

# /healthz: the process is up (readiness, /readyz, also needs Redis and storage).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# Refuses to start on 0.0.0.0 unless REGIONFARM_API_KEYS_FILE names a keys file (or --insecure).
CMD ["regionfarm", "api", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]
