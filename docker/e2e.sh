#!/usr/bin/env bash
# End-to-end test of the HAProxy + web apps demo (docker/compose.yaml) on the real engine:
#   1. three web apps: requests through HAProxy reach all three within 5 s
#   2. the same with the web apps started before ha (ha last)
#   3. scale to six: HAProxy balances over six within 3 s
#   4. docker kill one: gone from HAProxy within 6 s
#   5. docker stop one under a steady request loop: gone within 2 s, listed left (not failed),
#      and no request fails
#   6. `shoal members` in ha lists every container, ha under its compose hostname `ha`
# Before them: docker/demo.sh refuses a missing base image with what to run, and a failed
# `up` (a taken port) leaves no network; and HAProxy answers on its published port.
# Prints timings; exits non-zero on the first failure. Skips (exit 0) only when no Docker
# engine answers. As a benchmark: E2E_ROUNDS=N repeats the start-to-joined, kill and stop
# measurements N times and prints the worst and the median (see docs/benchmarks.md).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'e2e: %s\n' "$*"; }
now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.2f", ms / 1000 }'; }
if ! docker info >/dev/null 2>&1; then
    say "SKIP: no Docker engine answers"
    exit 0
fi
# Compose's project name: COMPOSE_PROJECT_NAME, else a unique one (runs may overlap).
project=${COMPOSE_PROJECT_NAME:-shoale2e$$}
export COMPOSE_PROJECT_NAME=$project
image=${SHOAL_IMAGE:-shoal:dev}
export SHOAL_IMAGE=$image
# HAProxy's port on any free loopback port (two runs at once must not collide).
export SHOAL_DEMO_PUBLISH=${SHOAL_DEMO_PUBLISH:-127.0.0.1:}
rounds=${E2E_ROUNDS:-1}
declare -a joined_s=() kill_s=() stop_s=()
# Prints "worst median" of its arguments (seconds).
summary() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { printf "worst %s s, median %s s", v[NR], v[int((NR + 1) / 2)] }'; }
compose() { docker-compose -p "$project" -f "$repo/docker/compose.yaml" "$@"; }
failed=0
cleanup() {
    local rc=$?
    if ((rc != 0 || failed)); then
        for c in $(docker ps -aq --filter "label=com.docker.compose.project=$project"); do
            echo "---- $(docker inspect -f '{{.Name}}' "$c"): last log lines" >&2
            docker logs --tail 15 "$c" >&2 2>&1 || true
        done
    fi
    compose down -t 2 >/dev/null 2>&1 || true
    [[ -n ${loop_pid:-} ]] && kill "$loop_pid" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { failed=1; printf 'e2e: FAIL: %s\n' "$*" >&2; exit 1; }

say "0. docker/demo.sh up without the base image says what to run and leaves no network"
missing=shoal:missing$$
if out=$(SHOAL_IMAGE=$missing "$repo/docker/demo.sh" up -d 2>&1); then fail "demo.sh up ran with no $missing image"; fi
grep -q "docker/build-image.sh $missing" <<<"$out" || fail "demo.sh did not say what to run: $out"
if docker network inspect "${project}_default" >/dev/null 2>&1; then fail "demo.sh left the network ${project}_default behind"; fi
say "   refused, naming docker/build-image.sh; no network left"

say "building images"
"$repo/docker/build-image.sh" "$image" >/dev/null
compose build >/dev/null

ids() { docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
hostname_of() { docker inspect -f '{{.Config.Hostname}}' "$1"; }
# Distinct hostnames answering through HAProxy in 3 rounds of N requests.
answering() {
    local n=$1 ha_ip=$2
    for _ in $(seq 1 $((n * 3))); do curl -s --max-time 1 "http://$ha_ip:8080/" || true; echo; done |
        grep -v '^$' | grep -v '<' | sort -u
}
# Waits until exactly the hostnames of the running web apps answer; prints the time taken.
wait_balanced() {
    local limit_ms=$1 t0=$2 want got
    want=$(for c in $(ids webapp); do hostname_of "$c"; done | sort -u)
    local n; n=$(wc -l <<<"$want")
    local ha_ip; ha_ip=$(ip_of "$(ids ha)")
    while :; do
        got=$(answering "$n" "$ha_ip")
        [[ $got == "$want" ]] && { secs $(($(now_ms) - t0)); return 0; }
        (($(now_ms) - t0 < limit_ms)) || fail "after $(secs $(($(now_ms) - t0))) s HAProxy reaches [$(tr '\n' ' ' <<<"$got")], want [$(tr '\n' ' ' <<<"$want")]"
        sleep 0.1
    done
}

say "0b. a docker/demo.sh up that fails (HAProxy's port taken) leaves no network"
holder_log=$(mktemp)
python3 -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); time.sleep(300)' >"$holder_log" &
holder=$!
while [[ ! -s $holder_log ]]; do sleep 0.05; done
taken=$(cat "$holder_log")
if SHOAL_DEMO_PUBLISH=127.0.0.1:$taken "$repo/docker/demo.sh" up -d >/dev/null 2>&1; then
    kill "$holder"; fail "demo.sh up succeeded with port $taken taken"
fi
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
rm -f "$holder_log"
if docker network inspect "${project}_default" >/dev/null 2>&1; then fail "a failed demo.sh up left the network ${project}_default behind"; fi
say "   up failed on the taken port $taken; demo.sh removed the network"

say "1. compose up with 3 web apps"
t=$(now_ms)
compose up -d --scale webapp=3 >/dev/null 2>&1
# wait_balanced runs in a command substitution: its `fail` ends only that subshell, so the
# caller checks the status (before, a miss printed FAIL and the run went on to PASS).
took=$(wait_balanced 5000 "$t") || fail "3 web apps not balanced within 5 s of compose up"
say "   all 3 reached through HAProxy $took s after compose up (target 5 s)"
published=$(compose port ha 8080)
answer=$(curl -s --max-time 2 "http://$published/") || fail "no answer on HAProxy's published port $published"
[[ -n $answer ]] || fail "an empty answer on HAProxy's published port $published"
say "   HAProxy published on $published answers ($answer)"
compose down -t 2 >/dev/null 2>&1

say "2. web apps first, ha last"
compose up -d --scale webapp=3 webapp >/dev/null 2>&1
sleep 1
t=$(now_ms)
compose up -d --scale webapp=3 ha >/dev/null 2>&1
took=$(wait_balanced 5000 "$t") || fail "3 web apps not balanced within 5 s of ha starting last"
say "   all 3 reached $took s after ha started (target 5 s)"

say "3. scale to 6"
t0=$(now_ms)
compose up -d --scale webapp=6 --no-recreate >/dev/null 2>&1
# Timed from when the new containers run: creating them one by one is Docker's time, not ours.
t=$(now_ms)
took=$(wait_balanced 3000 "$t") || fail "6 web apps not balanced within 3 s of the new containers starting"
say "   all 6 reached $took s after the new containers started (target 3 s; compose took $(secs $((t - t0))) s to start them)"

ha=$(ids ha)
ha_ip=$(ip_of "$ha")
for round in $(seq 1 "$rounds"); do
    ((rounds == 1)) || say "round $round of $rounds"
    # Start-to-joined: a new web app, from docker's start to the moment it lists everyone alive.
    compose up -d --scale webapp=5 --no-recreate >/dev/null 2>&1
    wait_balanced 5000 "$(now_ms)" >/dev/null
    t=$(now_ms)
    compose up -d --scale webapp=6 --no-recreate >/dev/null 2>&1
    newest=$(docker ps -q --latest --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=webapp")
    want=$(($(ids webapp | wc -l) + 1))
    while (($(docker exec "$newest" shoal members 2>/dev/null | grep -c ' alive ') != want)); do
        (($(now_ms) - t < 10000)) || fail "a new web app did not join within 10 s"
        sleep 0.05
    done
    joined_s+=("$(secs $(($(now_ms) - t)))")
    say "   a new web app container lists all $want alive ${joined_s[-1]} s after compose started it"
    say "4. docker kill one web app"
    victim=$(ids webapp | head -n1)
    vname=$(hostname_of "$victim")
    t=$(now_ms)
    docker kill "$victim" >/dev/null
    while docker exec "$ha" grep -q "server $vname " /tmp/haproxy.cfg; do
        (($(now_ms) - t < 6000)) || fail "$vname still in haproxy.cfg 6 s after docker kill"
        sleep 0.1
    done
    kill_s+=("$(secs $(($(now_ms) - t)))")
    say "   $vname out of haproxy.cfg ${kill_s[-1]} s after docker kill (target 6 s)"
    docker rm -f "$victim" >/dev/null
    
    say "5. docker stop one web app under a steady request loop"
    log=$(mktemp)
    (
        while :; do
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$ha_ip:8080/" || echo 000)
            echo "$code" >>"$log"
            sleep 0.02
        done
    ) &
    loop_pid=$!
    sleep 1
    victim=$(ids webapp | head -n1)
    vname=$(hostname_of "$victim")
    t=$(now_ms)
    docker stop "$victim" >/dev/null &
    stop_pid=$!
    gone=""
    while [[ -z $gone ]]; do
        if ! docker exec "$ha" grep -q "server $vname " /tmp/haproxy.cfg; then gone=$(now_ms); fi
        (($(now_ms) - t < 2000)) || fail "$vname still in haproxy.cfg 2 s after docker stop"
        sleep 0.05
    done
    # HAProxy drops it once it is `leaving`; `left` follows when every member acknowledged
    # its leave, or at the leave deadline (lan: 0.5 s) when one does not answer (issue 10).
    while :; do
        status=$(docker exec "$ha" shoal members | awk -v n="$vname" '$1 == n { print $3 }')
        [[ $status == left ]] && break
        (($(now_ms) - t < 3000)) || fail "ha lists the stopped $vname as '$status', not left, 3 s after docker stop"
        sleep 0.05
    done
    left_s=$(secs $(($(now_ms) - t)))
    wait "$stop_pid"
    sleep 1
    kill "$loop_pid" 2>/dev/null || true
    wait "$loop_pid" 2>/dev/null || true
    loop_pid=
    total=$(wc -l <"$log")
    bad=$(grep -vc '^200$' "$log" || true)
    stop_s+=("$(secs $((gone - t)))")
    say "   $vname out of haproxy.cfg ${stop_s[-1]} s after docker stop (target 2 s; benchmark target 1 s), listed left after ${left_s} s"
    say "   request loop: $total requests, $bad failed"
    ((bad == 0)) || fail "$bad of $total requests failed during the docker stop: $(grep -v '^200$' "$log" | sort | uniq -c | tr '\n' ' ')"
    rm -f "$log"
done
say "image $image: $(docker image inspect -f '{{.Size}}' "$image") bytes (target < 100 MB)"
if ((rounds > 1)); then
    say "start-to-joined: $(summary "${joined_s[@]}")"
    say "docker kill -> out of haproxy.cfg: $(summary "${kill_s[@]}") (target 6 s)"
    say "docker stop -> out of haproxy.cfg: $(summary "${stop_s[@]}") (target 1 s)"
fi

say "6. shoal members in ha lists every container"
members=$(compose exec -T ha shoal members)
for c in $(ids ha) $(ids webapp); do
    h=$(hostname_of "$c")
    grep -q "^$h .* alive" <<<"$members" || fail "ha does not list $h alive: $members"
done
grep -q "^ha .* alive" <<<"$members" || fail "ha is not listed under its compose hostname: $members"
say "   $(grep -c alive <<<"$members") alive, as expected; ha listed as ha"
say "PASS"
