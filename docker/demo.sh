#!/usr/bin/env bash
# Runs the HAProxy + web apps demo (docker/compose.yaml) with docker-compose, after checking
# that the image it builds on exists, so a newcomer gets told what to run instead of a
# registry lookup error; and if `up` fails, removes what it created (the network).
# Usage: docker/demo.sh up [-d] [--scale webapp=N] | down | ps | logs | exec ...  (any
# docker-compose command; only `up` is checked). Env: SHOAL_IMAGE (default shoal:dev),
# COMPOSE_PROJECT_NAME (compose's default: the directory name), SHOAL_DEMO_PUBLISH.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
image=${SHOAL_IMAGE:-shoal:dev}
compose() { docker-compose -f "$repo/docker/compose.yaml" "$@"; }
if [[ ${1:-} == up ]]; then
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        cat >&2 <<MSG
demo: the image $image is missing (the demo images are built on it). Build it first:
  docker/build-image.sh $image
    from this checkout's binaries; on a machine without a registry, run it as root: it
    builds debian:bookworm-slim with debootstrap
  or, where images can be pulled: docker build -f docker/Dockerfile -t $image .
then run docker/demo.sh $* again. See docs/docker.md.
MSG
        exit 1
    fi
    if ! compose "$@"; then
        echo "demo: docker-compose up failed; removing what it created (docker-compose down)" >&2
        compose down -t 2 >/dev/null 2>&1 || true
        exit 1
    fi
    exit 0
fi
exec docker-compose -f "$repo/docker/compose.yaml" "$@"
