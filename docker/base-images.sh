#!/usr/bin/env bash
# Builds, locally and without any image registry, the base images that docker/Dockerfile names in
# its FROM lines, so that the same Dockerfile works on a machine that cannot `docker pull`:
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, trimmed like the official
#                          slim image (no docs, man pages or locales; apt caches emptied), then
#                          `docker import`.
#   rust:1-slim-bookworm   the same Debian root plus gcc, libc6-dev and ca-certificates
#                          (debootstrap --include) and the host's Rust toolchain (found through
#                          `rustc --print sysroot`) copied to /usr/local/rustup, with
#                          CARGO_HOME=/usr/local/cargo and PATH set like the official image.
#
# An image that already exists (pulled or built earlier) is left alone unless --force is given.
# Packages come from the Debian mirror that apt on this host is configured with (override with
# DEBIAN_MIRROR=http://.../debian); downloaded .debs are kept in SHOAL_DEB_CACHE
# (default /var/cache/shoal-base-images) so a rebuild downloads little.
#
# Usage: docker/base-images.sh [--force] [--install-deps] [--no-host-ca] [--only slim|rust]
set -euo pipefail

SUITE=bookworm
SLIM_IMAGE=${SLIM_IMAGE:-debian:bookworm-slim}
RUST_IMAGE=${RUST_IMAGE:-rust:1-slim-bookworm}
DEB_CACHE=${SHOAL_DEB_CACHE:-/var/cache/shoal-base-images}
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

force=0
install_deps=0
host_ca=1
only=
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --force          rebuild images even if they already exist
  --install-deps   apt-get install debootstrap when it is missing (needs root and apt)
  --no-host-ca     do not copy the host's local CA certificates
                   (/usr/local/share/ca-certificates/*.crt) into the Rust builder image
  --only slim|rust build only one of the two images
EOF
}
while (($#)); do
    case $1 in
    --force) force=1 ;;
    --install-deps) install_deps=1 ;;
    --no-host-ca) host_ca=0 ;;
    --only)
        only=${2:-}
        [[ $only == slim || $only == rust ]] || {
            echo "base-images: --only takes slim or rust" >&2
            exit 64
        }
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "base-images: unknown argument: $1 (see --help)" >&2
        exit 64
        ;;
    esac
    shift
done

say() { printf 'base-images: %s\n' "$*"; }
die() {
    printf 'base-images: ERROR: %s\n' "$*" >&2
    exit 1
}

# ---- prerequisites ---------------------------------------------------------------------------
command -v docker >/dev/null 2>&1 ||
    die "the docker CLI is not installed (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 ||
    die "no Docker engine answers ('docker info' failed); start dockerd or fix DOCKER_HOST"

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

want_slim=0 want_rust=0
if [[ -z $only || $only == slim ]]; then
    if image_exists "$SLIM_IMAGE" && ((!force)); then
        say "$SLIM_IMAGE exists already; skipping (use --force to rebuild)"
    else want_slim=1; fi
fi
if [[ -z $only || $only == rust ]]; then
    if image_exists "$RUST_IMAGE" && ((!force)); then
        say "$RUST_IMAGE exists already; skipping (use --force to rebuild)"
    else want_rust=1; fi
fi
if ((!want_slim && !want_rust)); then
    say "nothing to do"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run this script as root (sudo $0)"
if ! command -v debootstrap >/dev/null 2>&1; then
    if ((install_deps)) && command -v apt-get >/dev/null 2>&1; then
        say "debootstrap is missing; installing it: apt-get install -y debootstrap"
        apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1 || {
            say "apt-get install failed; running apt-get update and retrying"
            apt-get update -qq
            apt-get install -y --no-install-recommends debootstrap
        }
    else
        die "debootstrap is not installed (Debian: apt-get install debootstrap, or rerun with --install-deps)"
    fi
fi
command -v tar >/dev/null 2>&1 || die "tar is not installed"

# ---- the Debian mirror apt is configured with ---------------------------------------------------
# First URI of a source serving suite $1 (deb822 *.sources or one-line sources.list), else "".
apt_uri_for_suite() {
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk -v want="$suite" '
            function flush() { if (ok && uri != "" && !done) { print uri; done = 1 } uri = ""; ok = 0; deb = 1 }
            BEGIN { deb = 1 }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "types:" { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "enabled:" && tolower($2) == "no" { deb = 0 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
            { if (!deb) ok = 0 }
            END { flush() }' "$f"
    done | head -n1 | grep . && return 0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk -v want="$suite" '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == want) { print $i; exit } }' "$f"
    done | head -n1
}
MIRROR=${DEBIAN_MIRROR:-$(apt_uri_for_suite "$SUITE" || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_uri_for_suite "$SUITE-security" || true)}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR%/}
say "Debian mirror: $MIRROR (security: $SECURITY_MIRROR)"

# ---- work area -----------------------------------------------------------------------------------
mkdir -p "$DEB_CACHE"
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/shoal-base-images.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys inside the root; never delete through a mount.
    local m
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(
        awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r
    )
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# debootstrap into $1 with extra packages $2 (comma-separated, may be empty).
bootstrap() {
    local root=$1 include=$2 log
    log=$WORK/debootstrap-${1##*/}.log
    local args=(--variant=minbase --cache-dir="$DEB_CACHE")
    [[ -n $include ]] && args+=(--include="$include")
    say "debootstrap ${args[*]} $SUITE $root $MIRROR"
    local t0=$SECONDS
    if ! debootstrap "${args[@]}" "$SUITE" "$root" "$MIRROR" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    say "debootstrap done in $((SECONDS - t0)) s"
}

# Make the root look like the official slim image: dpkg excludes for docs/man/locales and the
# apt/dpkg settings the official images carry; empty caches, logs and host-specific files.
slimify() {
    local root=$1
    say "trimming $root like the official slim image"
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/sources.list.d"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# Like the official debian:*-slim images: keep images small.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    echo 'force-unsafe-io' >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Files the dpkg excludes above would not have installed.
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,lintian,man}/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    # Caches, logs and files the host or Docker provide at run time.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/* \
        "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
        "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/var/tmp/* "$root"/debootstrap
    mkdir -p "$root/var/lib/apt/lists/partial"
    find "$root/var/log" -type f -exec truncate -s 0 {} +
    rm -f "$root/var/log/bootstrap.log"
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    : >"$root/etc/machine-id"
}

# docker import of root $1 as image $2, with the extra --change instructions that follow.
import_root() {
    local root=$1 image=$2
    shift 2
    local changes=(--change "ENV PATH=$IMAGE_PATH" --change 'CMD ["bash"]'
        --change "LABEL org.opencontainers.image.description=\"local stand-in for $image built by shoal docker/base-images.sh (debootstrap $SUITE from $MIRROR)\"")
    local c
    for c in "$@"; do changes+=(--change "$c"); done
    local old
    old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    say "docker import $root as $image ($(du -sh --apparent-size "$root" | cut -f1) uncompressed)"
    tar --numeric-owner --one-file-system -C "$root" -cf - . |
        docker import "${changes[@]}" --message "shoal base-images.sh: $image" - "$image" >/dev/null
    say "built $image: $(docker image ls --format '{{.Size}}' "$image")"
    # With --force, the image this one replaces is left untagged: remove it unless still in use.
    if [[ -n $old && -z $(docker image inspect -f '{{join .RepoTags ""}}' "$old" 2>/dev/null) ]] &&
        docker image rm "$old" >/dev/null 2>&1; then
        say "removed the replaced $image (${old:7:12})"
    fi
}

# ---- debian:bookworm-slim ------------------------------------------------------------------------
if ((want_slim)); then
    root=$WORK/slim
    bootstrap "$root" ""
    slimify "$root"
    import_root "$root" "$SLIM_IMAGE"
    rm -rf --one-file-system "$root"
fi

# ---- rust:1-slim-bookworm ------------------------------------------------------------------------
if ((want_rust)); then
    command -v rustc >/dev/null 2>&1 ||
        die "rustc is not on PATH: the Rust builder image copies the host's toolchain (rustup can download nothing here)"
    sysroot=$(rustc --print sysroot) || die "'rustc --print sysroot' failed"
    [[ -x $sysroot/bin/rustc && -x $sysroot/bin/cargo && -d $sysroot/lib/rustlib ]] ||
        die "toolchain at $sysroot lacks bin/rustc, bin/cargo or lib/rustlib (cargo found at: $(command -v cargo || echo none))"
    rust_version=$("$sysroot/bin/rustc" --version | awk '{print $2}')
    host=$("$sysroot/bin/rustc" -vV | awk '$1 == "host:" {print $2}')
    [[ $host == x86_64-unknown-linux-gnu || $host == aarch64-unknown-linux-gnu ]] ||
        die "unsupported host triple $host"
    say "Rust toolchain: $sysroot (rustc $rust_version, $host)"

    root=$WORK/rust
    bootstrap "$root" "gcc,libc6-dev,ca-certificates"
    slimify "$root"

    tc=/usr/local/rustup/toolchains/$rust_version-$host
    say "copying the toolchain to $tc (bin, lib; no docs)"
    mkdir -p "$root$tc" "$root/usr/local/cargo/bin"
    cp -a "$sysroot/bin" "$sysroot/lib" "$root$tc/"
    [[ -d $sysroot/etc ]] && cp -a "$sysroot/etc" "$root$tc/"
    for b in "$root$tc"/bin/*; do
        ln -s "$tc/bin/$(basename "$b")" "$root/usr/local/cargo/bin/$(basename "$b")"
    done
    echo "$rust_version-$host" >"$root/usr/local/rustup/default-toolchain"

    if ((host_ca)); then
        shopt -s nullglob
        cas=(/usr/local/share/ca-certificates/*.crt)
        shopt -u nullglob
        if ((${#cas[@]})); then
            say "adding the host's local CA certificates to the builder image: ${cas[*]##*/}" \
                "(so cargo trusts what the host trusts; --no-host-ca to skip)"
            mkdir -p "$root/usr/local/share/ca-certificates"
            cp "${cas[@]}" "$root/usr/local/share/ca-certificates/"
            chroot "$root" update-ca-certificates >/dev/null 2>&1 ||
                die "update-ca-certificates failed inside the builder root"
        fi
    fi

    import_root "$root" "$RUST_IMAGE" \
        "ENV RUSTUP_HOME=/usr/local/rustup" \
        "ENV CARGO_HOME=/usr/local/cargo" \
        "ENV PATH=/usr/local/cargo/bin:$IMAGE_PATH" \
        "ENV RUST_VERSION=$rust_version"
    rm -rf --one-file-system "$root"
    # The copied toolchain must run in the new root (its glibc vs the toolchain's needs).
    if ! versions=$(docker run --rm --network none "$RUST_IMAGE" \
        sh -c 'cargo --version && rustc --version && cc --version | head -n1' 2>&1); then
        printf '%s\n' "$versions" >&2
        docker image rm "$RUST_IMAGE" >/dev/null 2>&1 || true
        die "the toolchain copied into $RUST_IMAGE does not run there (output above); image removed"
    fi
    say "checked $RUST_IMAGE: $(printf '%s' "$versions" | tr '\n' ';' | sed 's/;/; /g')"
fi
say "done"
