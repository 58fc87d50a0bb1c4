#!/usr/bin/env python3
"""Burst-join timer: how long a cold start of N shoal agents takes to converge.

N release agents (lan profile, loopback, port 0) are started one after the other, DELAY ms
apart once each is ready, each `--join`ing a random earlier one (the cluster bench's cold
start); then every agent's `GET /v1/members` is polled every POLL ms until every agent lists
all N alive. Prints one line per start (seconds since the first spawn) and the median.

    cargo build --release -p shoal
    python3 benches/burst.py --nodes 20 --seeds 1,2,3,4,5,6 [--shoal target/release/shoal]

Only the Python standard library; nothing leaves 127.0.0.1. For bisecting and trying ideas
fast: the cluster bench (`cargo bench -p shoal --bench cluster`) gives the numbers that count,
beside Serf's.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def spawn(shoal, name, join, logdir):
    cmd = [shoal, "agent", "--node", name, "--bind", "127.0.0.1:0",
           "--control", "127.0.0.1:0", "--profile", "lan"]
    if join:
        cmd += ["--join", join]
    log = open(os.path.join(logdir, name + ".log"), "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"agent {name} exited before its readiness line; see {logdir}")
    try:
        ready = json.loads(line)["ready"]
    except (ValueError, KeyError) as e:
        raise SystemExit(f"agent {name}: unexpected readiness line {line!r}: {e}")
    return proc, ready["advertise"], ready["control"]


def alive(control, timeout):
    try:
        with urllib.request.urlopen(f"http://{control}/v1/members", timeout=timeout) as r:
            body = json.load(r)
    except (OSError, ValueError):
        return None
    return {m["name"] for m in body.get("members", []) if m.get("status") == "alive"}


def burst(shoal, n, seed, delay, poll, deadline, keep):
    rng = random.Random(seed)
    procs, agents = [], []
    if keep:
        os.makedirs(keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoal-burst-") as tmp:
        logdir = keep or tmp
        try:
            start = time.monotonic()
            for i in range(n):
                join = agents[rng.randrange(len(agents))][0] if agents else None
                proc, advertise, control = spawn(shoal, f"n{i + 1}", join, logdir)
                procs.append(proc)
                agents.append((advertise, control))
                time.sleep(delay)
            spawned = time.monotonic() - start
            names = {f"n{i + 1}" for i in range(n)}
            with ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
                while True:
                    tick = time.monotonic()
                    views = list(pool.map(lambda a: alive(a[1], 1.0), agents))
                    lagging = [i for i, v in enumerate(views) if v != names]
                    if not lagging:
                        return spawned, time.monotonic() - start, None
                    if tick - start > deadline:
                        worst = [(f"n{i + 1}", len(views[i] or ())) for i in lagging[:5]]
                        return spawned, float("inf"), worst
                    time.sleep(max(0.0, poll - (time.monotonic() - tick)))
        finally:
            for p in procs:
                p.kill()
            for p in procs:
                p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shoal", default="target/release/shoal", help="the agent binary")
    ap.add_argument("--nodes", type=int, default=20, help="agents per start (default 20)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, one start each")
    ap.add_argument("--delay-ms", type=float, default=3.0, help="pause between spawns")
    ap.add_argument("--poll-ms", type=float, default=50.0, help="members poll period")
    ap.add_argument("--deadline", type=float, default=30.0, help="give up after this (s)")
    ap.add_argument("--logs", help="keep the agents' logs in this folder (the last start's; "
                    "SHOAL_LOG_LEVEL=debug in the environment for more)")
    a = ap.parse_args()
    if a.nodes < 2:
        ap.error("--nodes must be at least 2")
    if a.delay_ms < 0 or a.poll_ms <= 0 or a.deadline <= 0:
        ap.error("--delay-ms must be >= 0, --poll-ms and --deadline > 0")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s]
    except ValueError:
        ap.error(f"--seeds {a.seeds!r} is not a comma-separated list of integers")
    if not seeds:
        ap.error("--seeds names no seed")
    if not os.access(a.shoal, os.X_OK):
        ap.error(f"--shoal {a.shoal!r} is not an executable (cargo build --release -p shoal)")
    times = []
    for seed in seeds:
        spawned, took, worst = burst(a.shoal, a.nodes, seed, a.delay_ms / 1000,
                                     a.poll_ms / 1000, a.deadline, a.logs)
        extra = f" (lagging: {worst})" if worst else ""
        print(f"N={a.nodes} seed={seed}: spawned in {spawned:.2f} s, "
              f"all list {a.nodes} alive after {took:.3f} s{extra}", flush=True)
        times.append(took)
    print(f"N={a.nodes}: median {statistics.median(times):.3f} s over {len(times)} starts "
          f"({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    sys.exit(main())
