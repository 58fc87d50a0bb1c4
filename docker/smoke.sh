#!/usr/bin/env bash
# End-to-end smoke test of the shoal container image:
#   1. cargo build --release -p shoal on the host
#   2. docker/base-images.sh --only slim (local debian:bookworm-slim if missing), through build-image.sh
#   3. docker build --target runtime-prebuilt -t shoal:dev (the host binary; image < 100 MB)
#   4. a fresh bridge network; 3 containers, all with the network alias shoal-node and the
#      identical command `shoal agent --join shoal-node:7948 --profile lan`
#   5. every container lists 3 members alive within 30 s of the first `docker run`
#   6. `docker stop` one: it exits 0, and the other two list it `left` (never `failed`)
#      within 5 s
# Everything it creates is removed on exit. Exit 0 on success; non-zero with a message
# otherwise. Only when no Docker engine answers does it print SKIP and exit 0.
#
# Env: SHOAL_SMOKE_IMAGE (default shoal:dev), SHOAL_SMOKE_JOIN_DEADLINE (s, default 30),
#      SHOAL_SMOKE_LEAVE_DEADLINE (s, default 5), SHOAL_SMOKE_KEEP=1 keeps the containers
#      and network for inspection.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD

IMAGE=${SHOAL_SMOKE_IMAGE:-shoal:dev}
JOIN_DEADLINE=${SHOAL_SMOKE_JOIN_DEADLINE:-30}
LEAVE_DEADLINE=${SHOAL_SMOKE_LEAVE_DEADLINE:-5}
MAX_IMAGE_BYTES=100000000 # 100 MB, as `docker image ls` counts
NODES=3

say() { printf 'smoke: %s\n' "$*"; }
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }

if ! docker info >/dev/null 2>&1; then
    echo "SKIP: no Docker engine answers"
    exit 0
fi

run_id=shoal-smoke-$$-$RANDOM
net=$run_id
names=()
for i in $(seq 1 "$NODES"); do names+=("$run_id-$i"); done
failed=0

dump_state() {
    local c
    for c in "${names[@]}"; do
        docker container inspect "$c" >/dev/null 2>&1 || continue
        echo "---- $c: $(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}}' "$c")" >&2
        docker exec "$c" shoal members >&2 2>&1 || true
        echo "---- $c: last log lines" >&2
        docker logs --tail 25 "$c" >&2 2>&1 || true
    done
}
cleanup() {
    local rc=$?
    if ((rc != 0 || failed)); then dump_state; fi
    if [[ ${SHOAL_SMOKE_KEEP:-0} == 1 ]]; then
        say "SHOAL_SMOKE_KEEP=1: leaving network $net and containers ${names[*]}"
    else
        # Everything this run created carries its label.
        docker ps -aq --filter "label=$run_id" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=$run_id" | xargs -r docker network rm >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
    failed=1
    printf 'smoke: FAIL: %s\n' "$*" >&2
    exit 1
}

# ---- 1. host binary ------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || fail "cargo is not on PATH (the smoke test builds the binary on the host)"
say "docker/build-image.sh $IMAGE (host build, base images, runtime-prebuilt image)"
t=$(now_ms)
size=$("$repo/docker/build-image.sh" "$IMAGE") || fail "docker/build-image.sh failed"
say "image build: $(secs $(($(now_ms) - t))) s"
say "image $IMAGE: $size bytes ($(docker image ls --format '{{.Size}}' "$IMAGE") in docker image ls)"
((size < MAX_IMAGE_BYTES)) || fail "image $IMAGE is $size bytes, not under $MAX_IMAGE_BYTES"

# ---- 4. three agents, one identical command ---------------------------------------------------------
docker network create --label "$run_id" "$net" >/dev/null
say "network $net created"
declare -A started=() joined=()
for c in "${names[@]}"; do
    started[$c]=$(now_ms)
    docker run -d --name "$c" --hostname "$c" --label "$run_id" \
        --network "$net" --network-alias shoal-node \
        "$IMAGE" agent --join shoal-node:7948 --profile lan >/dev/null
    say "started $c: shoal agent --join shoal-node:7948 --profile lan"
done
t_first=${started[${names[0]}]}

declare -A ip=()
for c in "${names[@]}"; do
    ip[$c]=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$c")
done

# `shoal members` of container $1 as "name addr status" lines ("" if it does not answer yet).
members() { docker exec "$1" shoal members 2>/dev/null | awk '{ print $1, $2, $3 }' || true; }

# ---- 5. all alive ------------------------------------------------------------------------------------
deadline=$((t_first + JOIN_DEADLINE * 1000))
while ((${#joined[@]} < NODES)); do
    for c in "${names[@]}"; do
        [[ -n ${joined[$c]:-} ]] && continue
        m=$(members "$c")
        if (($(awk '$3 == "alive"' <<<"$m" | wc -l) == NODES)); then
            joined[$c]=$(now_ms)
            say "$c lists $NODES alive, $(secs $((joined[$c] - started[$c]))) s after its docker run"
            # Each member must be listed under its container's address on the network.
            for o in "${names[@]}"; do
                grep -qx "$o ${ip[$o]}:7948 alive" <<<"$m" ||
                    fail "$c does not list $o as '${ip[$o]}:7948 alive'; it lists: $(tr '\n' ';' <<<"$m")"
            done
        fi
    done
    if ((${#joined[@]} < NODES)); then
        (($(now_ms) < deadline)) || fail "not every container lists $NODES alive within ${JOIN_DEADLINE} s"
        sleep 0.2
    fi
done
last=0
for c in "${names[@]}"; do
    if ((joined[$c] > last)); then last=${joined[$c]}; fi
done
say "cluster formed: all $NODES list $NODES alive $(secs $((last - t_first))) s after the first docker run"
for c in "${names[@]}"; do
    ready=$(docker logs "$c" 2>/dev/null | grep -m1 '^{"ready":' || true)
    [[ -n $ready ]] || fail "$c printed no readiness line on stdout"
done

# ---- 6. graceful leave on docker stop ----------------------------------------------------------------
victim=${names[NODES - 1]}
others=("${names[@]:0:NODES-1}")
say "docker stop $victim"
t_stop=$(now_ms)
docker stop "$victim" >/dev/null
t_stopped=$(now_ms)
code=$(docker inspect -f '{{.State.ExitCode}}' "$victim")
say "$victim stopped in $(secs $((t_stopped - t_stop))) s, exit code $code"
[[ $code == 0 ]] || fail "$victim exited $code after SIGTERM, not 0"
docker logs "$victim" 2>&1 | grep -q 'graceful leave complete' ||
    fail "$victim did not log 'graceful leave complete'"

deadline=$((t_stop + LEAVE_DEADLINE * 1000))
declare -A saw_left=()
while ((${#saw_left[@]} < ${#others[@]})); do
    for c in "${others[@]}"; do
        [[ -n ${saw_left[$c]:-} ]] && continue
        status=$(members "$c" | awk -v n="$victim" '$1 == n { print $3 }')
        case $status in
        left)
            saw_left[$c]=$(now_ms)
            say "$c lists $victim left, $(secs $((saw_left[$c] - t_stop))) s after docker stop"
            ;;
        failed) fail "$c lists $victim failed, not left, after a graceful docker stop" ;;
        esac
    done
    if ((${#saw_left[@]} < ${#others[@]})); then
        (($(now_ms) < deadline)) || fail "the others do not list $victim left within ${LEAVE_DEADLINE} s of docker stop"
        sleep 0.1
    fi
done
# The survivors still see each other alive.
for c in "${others[@]}"; do
    n=$(members "$c" | awk '$3 == "alive"' | wc -l)
    ((n == NODES - 1)) || fail "$c lists $n alive after the leave, expected $((NODES - 1))"
done

# ---- 7. discovery: no address at all ---------------------------------------------------------------
# Three more containers on a second bridge run `shoal agent --discover CLUSTER` with no --join;
# a fourth with another cluster name must stay alone.
dnet=$net-discover
docker network create --label "$run_id" "$dnet" >/dev/null
cluster=smoke-$$
dnames=("$run_id-d1" "$run_id-d2" "$run_id-d3")
t_disc=$(now_ms)
for c in "${dnames[@]}"; do
    docker run -d --name "$c" --hostname "$c" --label "$run_id" --network "$dnet" \
        "$IMAGE" agent --discover "$cluster" --profile lan >/dev/null
done
stranger=$run_id-other
docker run -d --name "$stranger" --hostname "$stranger" --label "$run_id" --network "$dnet" \
    "$IMAGE" agent --discover "other-$cluster" --profile lan >/dev/null
say "started ${#dnames[@]} containers with --discover $cluster and one with --discover other-$cluster"
deadline=$((t_disc + JOIN_DEADLINE * 1000))
while :; do
    done_count=0
    for c in "${dnames[@]}"; do
        n=$(members "$c" | awk '$3 == "alive"' | wc -l)
        ((n == 3)) && done_count=$((done_count + 1))
    done
    ((done_count == 3)) && break
    (($(now_ms) < deadline)) || fail "--discover: not every container lists 3 alive within ${JOIN_DEADLINE} s"
    sleep 0.2
done
t_found=$(now_ms)
say "--discover: all 3 list 3 alive $(secs $((t_found - t_disc))) s after the first docker run"
n=$(members "$stranger" | wc -l)
((n == 1)) || fail "the agent of another cluster lists $n members: $(members "$stranger" | tr '\n' ';')"
for c in "${dnames[@]}"; do
    members "$c" | grep -q "^$stranger " && fail "$c lists the agent of another cluster"
done
say "--discover: the agent of another cluster stayed alone"

say "PASS: image $size bytes; cluster formed in $(secs $((last - t_first))) s; leave seen in $(secs $(($(printf '%s\n' "${saw_left[@]}" | sort -n | tail -n1) - t_stop))) s"
