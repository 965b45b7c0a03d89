#!/usr/bin/env bash
# Bring up a container engine for the container tests on a bare Debian machine (CI, or a dev box as root):
#   1. install Debian's docker.io (and debootstrap) with apt when dockerd is missing;
#   2. start dockerd in the background unless `docker info` already answers (a stale pid file is removed);
#   3. make the local base image (no registry here: debootstrap a minimal bookworm and `docker import` it).
# Idempotent: every step is skipped when its result is already there.
#
#   scripts/ci-docker.sh            # all three steps
#   scripts/ci-docker.sh stop       # stop the dockerd this script started (by the pid it recorded)
#
# Env: BASE_IMAGE (default local/debian:bookworm), DOCKERD_LOG (default /var/log/barkstream-dockerd.log),
#      DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-local/debian:bookworm}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/barkstream-dockerd.log}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PIDFILE=/var/run/docker.pid
OUR_PIDFILE=/var/run/barkstream-dockerd.pid

log() { printf '[ci-docker %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

stop_dockerd() {
    if [ -f "$OUR_PIDFILE" ]; then
        local pid
        pid=$(cat "$OUR_PIDFILE")
        if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
            log "stopping dockerd (pid $pid)"
            as_root kill "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        fi
        as_root rm -f "$OUR_PIDFILE"
    else
        log "no dockerd started by this script"
    fi
}

install_engine() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} (apt)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "docker engine already answering"
        return
    fi
    if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        log "removing stale $PIDFILE"
        as_root rm -f "$PIDFILE"
    fi
    # --iptables=false: published 127.0.0.1 ports (docker-proxy) and container-to-container traffic on a user
    # network still work, and tests that use their own network namespaces are not cut off by docker's rules.
    log "starting dockerd (log: $DOCKERD_LOG)"
    as_root sh -c "nohup dockerd --iptables=false --ip-masq=false >'$DOCKERD_LOG' 2>&1 </dev/null & echo \$! >'$OUR_PIDFILE'"
    for _ in $(seq 1 120); do
        if docker info >/dev/null 2>&1; then
            log "dockerd up (pid $(cat "$OUR_PIDFILE"))"
            return
        fi
        if ! kill -0 "$(cat "$OUR_PIDFILE")" 2>/dev/null; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            log "dockerd exited"
            exit 1
        fi
        sleep 0.5
    done
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    log "dockerd did not answer in 60 s"
    exit 1
}

build_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE present"
        return
    fi
    local root
    root=$(mktemp -d /var/tmp/barkstream-rootfs.XXXXXX)
    log "debootstrap bookworm (minbase) into $root"
    local start=$SECONDS
    as_root debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
    as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    as_root tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    as_root rm -rf "$root" "$root.log"
    log "base image $BASE_IMAGE made in $((SECONDS - start)) s"
}

case "${1:-up}" in
    up)
        install_engine
        start_dockerd
        build_base_image
        ;;
    stop) stop_dockerd ;;
    *) echo "usage: $0 [up|stop]" >&2; exit 2 ;;
esac
