#!/usr/bin/env bash
# A local 3-agent demo on loopback: join, `shoal members`, a crash, a graceful leave.
# Usage: bash examples/demo.sh        (builds shoal in release mode first)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
shoal=$PWD/target/release/shoal
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# A Serf-style handler: records every member event the agent sees.
cat > "$work/handler.sh" <<SH
#!/bin/sh
while read -r name ip role tags; do
  printf '  handler on %s: %s %s (%s)\\n' "\$SERF_SELF_NAME" "\$SERF_EVENT" "\$name" "\$ip" >> "$work/events.txt"
done
SH
chmod +x "$work/handler.sh"

start() { # name, extra args...
  local name=$1; shift
  "$shoal" agent --node "$name" --bind 127.0.0.1:0 --control 127.0.0.1:0 --profile local \
    --event-handler "$work/handler.sh" "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q ready "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/.*"gossip":"\([^"]*\)".*/\1/p' "$work/$name.out" >"$work/$name.gossip"
  sed -n 's/.*"control":"\([^"]*\)".*/\1/p' "$work/$name.out" >"$work/$name.control"
}

echo "== starting web-1, web-2 (joins web-1), lb (joins web-2)"
start web-1 --tag role=web
start web-2 --tag role=web --join "$(cat "$work/web-1.gossip")"
start lb --tag role=lb --join "$(cat "$work/web-2.gossip")"
events() { sleep 0.3; sort "$work/events.txt" 2>/dev/null; : >"$work/events.txt"; }
sleep 1
echo "== shoal members (asked of lb)"
"$shoal" members --control "$(cat "$work/lb.control")"
events

echo "== kill -9 web-2"
{ kill -9 "${pids[1]}"; wait "${pids[1]}"; } 2>/dev/null || true
sleep 2
"$shoal" members --control "$(cat "$work/lb.control")"
events

echo "== SIGTERM web-1 (graceful leave)"
kill -TERM "${pids[0]}"
sleep 1
"$shoal" members --control "$(cat "$work/lb.control")"
events
echo "== done"
