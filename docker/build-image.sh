#!/usr/bin/env bash
# Builds the shoal image from the binaries built on the host (the fast path; the base image
# comes from docker/base-images.sh when no registry is reachable).
# Usage: docker/build-image.sh [IMAGE]   (default shoal:dev); prints the image size in bytes.
#
# What it does on the host: `cargo build --release -p shoal`; then, if `debian:bookworm-slim`
# is missing, docker/base-images.sh --only slim builds it with debootstrap (only the runtime
# base: the prebuilt path never uses the Rust builder image). When debootstrap is missing and
# this runs as root, it installs the Debian package `debootstrap` with apt-get, after saying
# so; SHOAL_NO_INSTALL=1 refuses instead and names the package to install.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-shoal:dev}
say() { printf 'build-image: %s\n' "$*" >&2; }
say "cargo build --release -p shoal"
cargo build --release -p shoal --manifest-path "$repo/Cargo.toml" >&2
base_args=(--only slim)
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 && ! command -v debootstrap >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 && ${SHOAL_NO_INSTALL:-0} != 1 ]]; then
        say "debian:bookworm-slim is missing and so is debootstrap: installing the Debian package debootstrap on this host (apt-get; SHOAL_NO_INSTALL=1 to refuse)"
        base_args+=(--install-deps)
    fi
fi
"$repo/docker/base-images.sh" "${base_args[@]}" >&2
# A context holding only the binaries: the classic builder (no BuildKit) ignores
# docker/Dockerfile.dockerignore and would otherwise send all of target/ to the daemon.
ctx=$(mktemp -d "${TMPDIR:-/tmp}/shoal-image-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/target/release"
cp "$repo/target/release/shoal" "$repo/target/release/shoal-template" "$ctx/target/release/"
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
say "docker build --target runtime-prebuilt -t $image"
if ! docker build -f "$repo/docker/Dockerfile" --target runtime-prebuilt -t "$image" "$ctx" >"$ctx/log" 2>&1; then
    cat "$ctx/log" >&2
    say "docker build failed (log above)"
    exit 1
fi
# The previous build, now untagged, would pile up as a dangling image.
if [[ -n $old && $old != "$(docker image inspect -f '{{.Id}}' "$image")" ]]; then
    docker image rm "$old" >/dev/null 2>&1 || true
fi
docker image inspect -f '{{.Size}}' "$image"
