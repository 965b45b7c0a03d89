#!/usr/bin/env bash
# Build the barkstream image from the repo's Dockerfile.
#
#   scripts/build-image.sh                      # CPU image on the local base (CI, the container tests)
#   IMAGE=barkstream:gpu BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04 TORCH_SPEC=torch==2.14.1 \
#       WHEELHOUSE=0 scripts/build-image.sh     # GPU image; pip in the build reaches the package index
#
# With WHEELHOUSE=1 (default) every wheel the image needs (torch included) is gathered on this host first,
# with this host's pip and its configuration, into build/docker/wheels, and the image installs them with
# `pip install --no-index`: no network inside the build, and the heavy torch wheel is copied, not downloaded.
# The host's Python must then match the base image's (same cpXY tag); the script checks that.
# With WHEELHOUSE=0 pip in the build reaches the index itself; the host's CA bundle is put into the build
# context (build/docker/ca-certificates.crt, never committed) for machines whose index needs it. That needs
# an engine whose containers reach the network: the dockerd scripts/ci-docker.sh starts (--iptables=false,
# --ip-masq=false) gives them none, which is why CI uses the wheelhouse.
#
# Env: IMAGE (barkstream:cpu), BASE_IMAGE (local/debian:bookworm), TORCH_SPEC (torch==2.13.0+cpu: the CPU
#      build of torch), TORCH_INDEX_URL (extra index for torch, e.g. https://download.pytorch.org/whl/cpu),
#      WHEELHOUSE (1), PYTHON (python3: the host Python that gathers the wheels), DOCKER_BUILD_ARGS (extra
#      `docker build` arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-barkstream:cpu}
BASE_IMAGE=${BASE_IMAGE:-local/debian:bookworm}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
WHEELHOUSE=${WHEELHOUSE:-1}
PYTHON=${PYTHON:-python3}
CTX_EXTRA=build/docker
WHEELS=$CTX_EXTRA/wheels

log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The image's requirements: the base dependencies, the [server] extra with torch replaced by TORCH_SPEC,
# and the build requirements (the install generates the gRPC stubs with grpcio-tools).
requirements() {
    "$PYTHON" - "$TORCH_SPEC" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
reqs = project["project"]["dependencies"] + project["project"]["optional-dependencies"]["server"]
reqs = [sys.argv[1] if re.match(r"torch\b(?!audio)", r) else r for r in reqs]
print("\n".join(reqs + project["build-system"]["requires"]))
EOF
}

gather_wheels() {
    local base_py host_py
    base_py=$(docker run --rm --entrypoint python3 "$BASE_IMAGE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$base_py" != "$host_py" ]; then
        log "the base image has Python $base_py, $PYTHON is $host_py: set PYTHON=python$base_py or WHEELHOUSE=0"
        exit 1
    fi
    local reqfile stamp
    reqfile=$(mktemp)
    requirements >"$reqfile"
    stamp=$(cat "$reqfile" <(echo "$host_py") | sha256sum | cut -c1-16)
    if [ -f "$WHEELS/.stamp" ] && [ "$(cat "$WHEELS/.stamp")" = "$stamp" ]; then
        log "wheelhouse up to date ($WHEELS)"
    else
        log "gathering wheels for Python $host_py into $WHEELS ($TORCH_SPEC)"
        rm -rf "$WHEELS"
        mkdir -p "$WHEELS"
        local extra=()
        [ -n "$TORCH_INDEX_URL" ] && extra+=(--extra-index-url "$TORCH_INDEX_URL")
        # (grep: this machine's pip configuration lists local indexes that lack most names; pip warns per name)
        "$PYTHON" -m pip wheel -q --prefer-binary -w "$WHEELS" "${extra[@]}" -r "$reqfile" 2>&1 \
            | { grep -v "is ignored: it is neither a file nor a directory" || true; }
        [ "${PIPESTATUS[0]}" -eq 0 ] || { log "pip wheel failed"; exit 1; }
        echo "$stamp" >"$WHEELS/.stamp"
    fi
    rm -f "$reqfile"
}

start=$SECONDS
mkdir -p "$CTX_EXTRA"
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "TORCH_SPEC=$TORCH_SPEC")
[ -n "$TORCH_INDEX_URL" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
if [ "$WHEELHOUSE" = 1 ]; then
    gather_wheels
    build_args+=(--build-arg "PIP_INSTALL_ARGS=--no-index")
else
    rm -rf "$WHEELS"
fi
for ca in "${PIP_CERT:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [ -n "$ca" ] && [ -f "$ca" ]; then cp "$ca" "$CTX_EXTRA/ca-certificates.crt"; break; fi
done

log "docker build -t $IMAGE (base $BASE_IMAGE)"
# shellcheck disable=SC2086
docker build "${build_args[@]}" ${DOCKER_BUILD_ARGS:-} -t "$IMAGE" .
# (No pruning here: removing the untagged images of earlier builds would also remove the cached `deps` stage,
# and the next build would install torch again. `docker image prune` when disk space matters.)
log "built $IMAGE in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
