#!/usr/bin/env python3
"""How long a health check's change takes to reach every other member.

Starts 3 `shoal agent`s on loopback (lan profile); the first runs
`--check 'web=script:test -e FLAG || exit 2' --check-interval 100ms`. Each run removes FLAG and
times until every other member's /v1/members lists the first member `critical`, then restores
it and times until `passing` (each flip after a random pause, so it lands anywhere between two
runs). Prints the median and the worst. The interval bounds it: a change
waits up to one interval for the next run, then one meta update (direct copies to the live
members, then gossip).

Run: cargo build --release -p shoal && python3 benches/health_latency.py target/release/shoal [RUNS]
"""

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    shoal = sys.argv[1] if len(sys.argv) > 1 else "target/release/shoal"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    work = tempfile.mkdtemp(prefix="shoal-health-")
    flag = os.path.join(work, "ok")
    open(flag, "w").close()
    procs, controls = [], []

    def start(name, extra):
        control = free_port()
        controls.append(control)
        p = subprocess.Popen(
            [shoal, "agent", "--node", name, "--bind", "127.0.0.1:0",
             "--control", f"127.0.0.1:{control}", "--profile", "lan"] + extra,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(p)
        return json.loads(p.stdout.readline())["ready"]["gossip"]

    def health(control):
        url = f"http://127.0.0.1:{control}/v1/members"
        try:
            members = json.load(urllib.request.urlopen(url, timeout=1))["members"]
        except OSError:
            return None
        return next((m.get("health") for m in members if m["name"] == "h0"), None)

    def until_all(want, limit=10.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            if all(health(c) == want for c in controls[1:]):
                return time.monotonic() - t0
            time.sleep(0.005)
        return float("inf")

    try:
        seed = start("h0", ["--check", f"web=script:test -e {flag} || exit 2",
                            "--check-interval", "100ms"])
        for i in (1, 2):
            start(f"h{i}", ["--join", seed])
        if until_all("passing", 20.0) == float("inf"):
            sys.exit("the members never listed h0 passing")
        down, up = [], []
        for _ in range(runs):
            # A random pause first: flipping the flag right after a change was seen would
            # always land just after a run, one whole interval before the next.
            time.sleep(random.uniform(0.0, 0.3))
            os.remove(flag)
            down.append(until_all("critical"))
            time.sleep(random.uniform(0.0, 0.3))
            open(flag, "w").close()
            up.append(until_all("passing"))
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)

    def summary(xs):
        return f"median {statistics.median(xs) * 1000:.0f} ms, worst {max(xs) * 1000:.0f} ms"

    print(f"check fails -> critical on every other member ({runs} runs, interval 100ms, "
          f"fall 1, lan, 3 agents): {summary(down)}")
    print(f"check passes -> passing on every other member: {summary(up)}")


if __name__ == "__main__":
    main()
