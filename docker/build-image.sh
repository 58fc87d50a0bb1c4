#!/usr/bin/env bash
# Builds the shoal image from the binaries built on the host (the fast path; the base images
# come from docker/base-images.sh when no registry is reachable).
# Usage: docker/build-image.sh [IMAGE]   (default shoal:dev); prints the image size in bytes.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-shoal:dev}
cargo build --release -p shoal --manifest-path "$repo/Cargo.toml" >&2
base_args=()
[[ $(id -u) -eq 0 ]] && base_args+=(--install-deps)
"$repo/docker/base-images.sh" "${base_args[@]}" >&2
# A context holding only the binaries: the classic builder (no BuildKit) ignores
# docker/Dockerfile.dockerignore and would otherwise send all of target/ to the daemon.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/shoal-image-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/release"
cp "$repo/target/release/shoal" "$repo/target/release/shoal-template" "$ctx/target/release/"
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
if ! docker build -f "$repo/docker/Dockerfile" --target runtime-prebuilt -t "$image" "$ctx" >"$ctx/log" 2>&1; then
    cat "$ctx/log" >&2
    echo "build-image: docker build failed (log above)" >&2
    exit 1
fi
# The previous build, now untagged, would pile up as a dangling image.
if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
fi
docker image inspect -f '{{.Size}}' "$image"
