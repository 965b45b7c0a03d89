# barkstream: one image for every service; the command picks the role.
#
#   docker run --rm -p 50062:50062 -v /srv/bark-small:/checkpoint:ro IMAGE serve coarse
#   docker run --rm -p 50051:50051 -v /srv/bark-small:/checkpoint:ro IMAGE serve     # all five, one port
#
# The checkpoint is never baked in: mount it (read-only) at /checkpoint, where BARKSTREAM_CHECKPOINT points.
# The container runs as uid 10001 and writes nothing outside /tmp and its home, so it runs with a
# read-only root file system. HEALTHCHECK asks the gRPC health service (SERVING once the model is warm).
#
# Base images (the build argument BASE_IMAGE; see docs/deploy.md):
#   GPU nodes (default): nvidia/cuda:13.0.0-base-ubuntu24.04 + TORCH_SPEC=torch==2.14.1 from PyPI (the torch
#                        wheel brings its own CUDA 13 libraries; the base brings the NVIDIA runtime settings).
#   CPU nodes:           debian:bookworm-slim (or the local debootstrap image CI makes) + the CPU build of torch,
#                        e.g. TORCH_SPEC=torch==2.13.0+cpu with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                        or a wheelhouse (scripts/build-image.sh gathers one on the host: PIP_INSTALL_ARGS=--no-index).
# Any base with Python >= 3.11 works; one without it gets python3 from apt.

ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

# ---- base: the Python runtime and the non-root user, shared by the build and the final stage
FROM ${BASE_IMAGE} AS base
LABEL org.opencontainers.image.title="barkstream" \
      org.opencontainers.image.description="Bark text-to-speech as gRPC streaming microservices"
ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN set -eux; \
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), "barkstream needs Python >= 3.11, not " + sys.version'; \
    echo 'barkstream:x:10001:10001:barkstream:/home/barkstream:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'barkstream:x:10001:' >> /etc/group; \
    mkdir -p /home/barkstream /checkpoint; \
    chown 10001:10001 /home/barkstream

# ---- deps: a virtual environment with torch and the server dependencies (rebuilt only when pyproject.toml,
#      the base or the build arguments change)
FROM base AS deps
ARG TORCH_SPEC=torch==2.14.1
ARG TORCH_INDEX_URL=
ARG PIP_INSTALL_ARGS=
RUN python3 -m venv /opt/barkstream
ENV PATH=/opt/barkstream/bin:$PATH
# pyproject.toml (the dependencies) and the optional extras from build/docker (made by scripts/build-image.sh,
# ignored by git): wheels/ (a wheelhouse) and ca-certificates.crt (the CA bundle pip needs where the index
# sits behind a proxy). The glob lets the COPY succeed when build/docker does not exist.
COPY pyproject.toml build/docke[r] /tmp/extra/
RUN set -eux; \
    if [ -f /tmp/extra/ca-certificates.crt ]; then export PIP_CERT=/tmp/extra/ca-certificates.crt; fi; \
    links=""; if [ -d /tmp/extra/wheels ]; then links="--find-links /tmp/extra/wheels"; fi; \
    index=""; if [ -n "$TORCH_INDEX_URL" ]; then index="--extra-index-url $TORCH_INDEX_URL"; fi; \
    python -c "import re, tomllib; p = tomllib.load(open('/tmp/extra/pyproject.toml', 'rb'))['project']; \
reqs = p['dependencies'] + p['optional-dependencies']['server']; \
print('\n'.join(r for r in reqs if re.split(r'[<>=!~ ;\[]', r)[0] != 'torch'))" > /tmp/requirements.txt; \
    cat /tmp/requirements.txt; \
    pip install $PIP_INSTALL_ARGS $links $index "$TORCH_SPEC" -r /tmp/requirements.txt; \
    # torchaudio (imported by encodec, unused by barkstream) ships native code linked against torch's CUDA \
    # build; next to a CPU torch it cannot load, and without its native libraries it imports in pure Python.
    if ! python -c 'import torchaudio' 2>/dev/null; then \
        rm -f "$(python -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchaudio").origin))')"/lib/*.so; \
    fi; \
    python -c 'import torch, torchaudio, encodec; print("torch", torch.__version__, "torchaudio", torchaudio.__version__)'

# ---- build: barkstream itself (the install generates the gRPC stubs), into its own directory so that a
#      source change rebuilds a small layer, not the whole environment
FROM deps AS build
ARG PIP_INSTALL_ARGS=
RUN set -eux; \
    if [ -f /tmp/extra/ca-certificates.crt ]; then export PIP_CERT=/tmp/extra/ca-certificates.crt; fi; \
    links=""; if [ -d /tmp/extra/wheels ]; then links="--find-links /tmp/extra/wheels"; fi; \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/extra/pyproject.toml', 'rb'))['build-system']['requires']))" \
        > /tmp/build-requirements.txt; \
    pip install $PIP_INSTALL_ARGS $links -r /tmp/build-requirements.txt
COPY setup.py README.md pyproject.toml /src/
COPY protos /src/protos
COPY services /src/services
COPY client /src/client
RUN set -eux; \
    pip install --no-deps --no-build-isolation --target /opt/barkstream-app /src

# ---- the image: the base, the environment and the app; no build tools, no wheels, no checkpoint
FROM base
COPY --from=deps /opt/barkstream /opt/barkstream
COPY --from=build /opt/barkstream-app /opt/barkstream-app
COPY scripts/healthcheck.py /opt/barkstream/healthcheck.py
ENV PATH=/opt/barkstream-app/bin:/opt/barkstream/bin:$PATH \
    PYTHONPATH=/opt/barkstream-app \
    HOME=/home/barkstream \
    HF_HOME=/home/barkstream/.cache/huggingface \
    BARKSTREAM_HOST=0.0.0.0 \
    BARKSTREAM_CHECKPOINT=/checkpoint
RUN barkstream serve --help > /dev/null
USER 10001:10001
WORKDIR /home/barkstream
# orchestrator / all, semantic, coarse, fine, codec
EXPOSE 50051 50061 50062 50063 50064 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/barkstream/healthcheck.py"]
ENTRYPOINT ["barkstream"]
CMD ["serve"]
