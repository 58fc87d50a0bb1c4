#!/usr/bin/env bash
# The floating-IP demo (issue 12's seed scenario), in network namespaces on this machine:
# two HAProxy nodes lb1 (priority 150) and lb2 (priority 100), a shoal agent on each in group
# `lb` with a health check on HAProxy and floating-ip.sh as --on-primary/--on-backup/--on-fault,
# and a client that curls the floating address 10.250.77.50 in a loop. lb1 is then stopped,
# killed, has its HAProxy killed, and is restarted after each; the demo prints who answers, how
# long the address was lost and how many requests failed.
#
# Usage (root): bash examples/floating-ip/demo.sh   (builds shoal in release mode first;
#               SHOAL=/path/to/shoal uses that binary instead; KEEP_LOGS=1 keeps the logs)
# Needs: ip (iproute2), haproxy, arping (iputils-arping), curl. Everything lives in namespaces
# named shoal-demo-fip-*, on addresses 10.250.77.0/24 that exist only inside them; all of it is
# deleted at the end, also on Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: needs root (it creates network namespaces)" >&2
    exit 1
fi
for tool in ip haproxy arping curl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "demo.sh: '$tool' is not installed (Debian: apt-get install iproute2 haproxy iputils-arping curl)" >&2
        exit 1
    }
done
if [ -z "${SHOAL:-}" ]; then
    cargo build --release --quiet -p shoal
    SHOAL=$PWD/target/release/shoal
fi

p=shoal-demo-fip
net=10.250.77
vip=$net.50
work=$(mktemp -d)
nodes=(lb1 lb2)
declare -A ip=([lb1]=$net.1 [lb2]=$net.2) prio=([lb1]=150 [lb2]=100) other=([lb1]=lb2 [lb2]=lb1)

keep_logs=${KEEP_LOGS:-}
cleanup() {
    for ns in $p-lb1 $p-lb2 $p-client $p-hub; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -n "$keep_logs" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cleanup 2>/dev/null; work=$(mktemp -d)

now_ms() { date +%s%3N; }
say() { printf '%s  %s\n' "$(date +%T.%3N)" "$*"; }

# The network: a bridge in a hub namespace, one veth per namespace.
ip netns add $p-hub
ip -n $p-hub link add br0 type bridge
ip -n $p-hub link set br0 up
k=0
for host in lb1:$net.1 lb2:$net.2 client:$net.100; do
    name=${host%%:*} addr=${host#*:}
    ip netns add $p-$name
    ip -n $p-hub link add v$k type veth peer name eth0 netns $p-$name
    ip -n $p-hub link set v$k master br0 up
    ip -n $p-$name addr add "$addr/24" dev eth0
    ip -n $p-$name link set eth0 up
    ip -n $p-$name link set lo up
    k=$((k + 1))
done

start_haproxy() { # node
    NODE=$1 ip netns exec $p-$1 haproxy -db -f "$here/haproxy.cfg" >>"$work/$1-haproxy.log" 2>&1 &
    disown
}
start_agent() { # node
    local n=$1 hook="$here/floating-ip.sh $vip/24 eth0"
    ip netns exec $p-$n "$SHOAL" agent --node "$n" --bind "${ip[$n]}:7946" \
        --join "${ip[${other[$n]}]}:7946" --group lb --priority "${prio[$n]}" \
        --check haproxy=http:http://127.0.0.1:8404/health --check-interval 1s --check-fall 1 \
        --on-primary "$hook" --on-backup "$hook" --on-fault "$hook" \
        >>"$work/$n-shoal.log" 2>&1 &
    disown
}
start_node() { # node: a fresh start (a container's network comes up without the address)
    ip -n $p-$1 addr del "$vip/24" dev eth0 2>/dev/null || true
    ip -n $p-$1 link set eth0 up
    start_haproxy "$1"
    start_agent "$1"
}
signal_node() { # node signal [pattern]
    local pid
    for pid in $(ip netns pids $p-$1); do
        if [ -z "${3:-}" ] || grep -q "$3" "/proc/$pid/comm" 2>/dev/null; then
            kill "-$2" "$pid" 2>/dev/null || true
        fi
    done
}
wait_gone() { # node: wait (at most 10 s) until nothing runs on it any more, like docker stop
    local i
    for i in $(seq 200); do
        [ -z "$(ip netns pids $p-$1)" ] && return 0
        sleep 0.05
    done
    signal_node "$1" KILL
}
primary_of() { ip netns exec $p-$1 "$SHOAL" primary lb 2>/dev/null || echo "(none)"; }
holders() {
    local n out=""
    for n in "${nodes[@]}"; do
        ip -n $p-$n -o -4 addr show dev eth0 | grep -q " $vip/" && out="$out $n"
    done
    echo "${out:- nobody}"
}

# The client: one curl every ~20 ms, 200 ms timeout; one line per request: epoch-ms answer.
ip netns exec $p-client bash -c "while :; do t=\$(date +%s%3N); \
    if out=\$(curl -s -m 0.2 http://$vip/); then echo \"\$t \${out:-empty}\"; else echo \"\$t FAIL\"; fi; \
    sleep 0.02; done" >"$work/client.txt" 2>/dev/null &
disown

wait_answer() { # node since-ms limit-s: prints "after-ms failed-count", or fails
    local deadline=$(($(now_ms) + $3 * 1000)) line
    while [ "$(now_ms)" -lt $deadline ]; do
        line=$(awk -v s="$2" -v n="$1" '$1 >= s { if ($2 == n) { print $1 - s, f; exit } if ($2 == "FAIL") f++ }' "$work/client.txt")
        if [ -n "$line" ]; then
            set -- $line
            echo "$1 ${2:-0}"
            return 0
        fi
        sleep 0.05
    done
    return 1
}
report() { # what node since
    local r
    if r=$(wait_answer "$2" "$3" 30); then
        set -- "$1" "$2" $r
        say "  -> $2 answers ${3} ms after $1; $4 requests failed meanwhile"
    else
        say "  -> $2 did not answer within 30 s after $1"
        keep_logs=1
        exit 1
    fi
}
settle() { # wait until lb1 holds the address alone and both agents agree
    local deadline=$(($(now_ms) + 30000))
    while [ "$(now_ms)" -lt $deadline ]; do
        if [ "$(holders)" = " lb1" ] && [ "$(primary_of lb1)" = lb1 ] && [ "$(primary_of lb2)" = lb1 ]; then
            say "  settled: the address is on lb1 only; lb1 and lb2 both say the primary is lb1"
            return 0
        fi
        sleep 0.1
    done
    say "  not settled after 30 s: address on$(holders); lb1 says $(primary_of lb1), lb2 says $(primary_of lb2)"
    keep_logs=1
    exit 1
}

say "starting HAProxy and shoal on lb1 (priority 150) and lb2 (priority 100); floating address $vip"
t=$(now_ms)
for n in "${nodes[@]}"; do start_node "$n"; done
report "the start" lb1 "$t"
settle

say "1. docker stop of lb1: SIGTERM to its agent and HAProxy (the agent leaves the cluster)"
t=$(now_ms); signal_node lb1 TERM; report "the stop" lb2 "$t"
say "   lb2 says the primary is $(primary_of lb2); the address is on$(holders)"
wait_gone lb1
ip -n $p-lb1 link set eth0 down
say "   restarting lb1"
t=$(now_ms); start_node lb1; report "the restart" lb1 "$t"; settle

say "2. docker kill of lb1: SIGKILL to everything, its network gone (lb2 waits for SWIM to declare it dead)"
t=$(now_ms); signal_node lb1 KILL; ip -n $p-lb1 link set eth0 down; wait_gone lb1; report "the kill" lb2 "$t"
say "   lb2 says the primary is $(primary_of lb2)"
say "   restarting lb1"
t=$(now_ms); start_node lb1; report "the restart" lb1 "$t"; settle

say "3. kill -9 of lb1's HAProxy: its check fails, lb1 runs --on-fault, lb2 --on-primary"
t=$(now_ms); signal_node lb1 KILL haproxy; report "HAProxy's death" lb2 "$t"
sleep 0.5
say "   lb1 says the primary is $(primary_of lb1); the address is on$(holders)"
say "   restarting HAProxy on lb1"
t=$(now_ms); start_haproxy lb1; report "HAProxy's restart" lb1 "$t"; settle

say "every transition the agents logged (each ran floating-ip.sh with SHOAL_STATE=state):"
for n in "${nodes[@]}"; do
    sed -n "s/^[0-9-]*T\([0-9:.]*\)[0-9]\{3\}Z .*primary group transition group=\([^ ]*\) state=\([^ ]*\) primary=\([^ ]*\).*/\1  $n: \3 (primary \4)/p" "$work/$n-shoal.log"
done | sort | sed 's/^/    /'
total=$(wc -l <"$work/client.txt")
failed=$(grep -c FAIL "$work/client.txt" || true)
say "client: $total requests, $failed failed"
