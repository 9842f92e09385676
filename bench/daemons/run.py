"""`make bench-daemons`: the daemons of issue 12 under their real load
generators, in one run, against their peers.

RESP: `redis-benchmark -t ping,set,get -P 16` against examples/resp_server.py,
Debian's redis-server (started here on a free port, no persistence) and the
same server on uvloop (resp_uvloop.py). HTTP: `wrk` (keep-alive, GET /)
against examples/http_server.py and the same server on uvloop with httptools
(http_uvloop.py). Every server is one process. The systems alternate within
each repeat, so a burst of noise on the machine hits them alike; each row is
the median of the repeats with the spread (min-max), and each ratio is of
medians from this run. The load average is printed before and after.

    PYTHONPATH=bench python bench/daemons/run.py [--repeat 3] [--requests N] [--duration S]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

RESP_TESTS = ("PING_INLINE", "PING_MBULK", "SET", "GET")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError as exc:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{argv[0]} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                ) from exc
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{argv} did not listen on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def resp_systems() -> dict[str, list[str]]:
    py = sys.executable
    systems = {
        "evloop": [py, str(ROOT / "examples" / "resp_server.py"), "--port"],
        "uvloop": [py, str(HERE / "resp_uvloop.py"), "--port"],
    }
    server = shutil.which("redis-server")
    if server:
        systems["redis-server"] = [server, "--save", "", "--appendonly", "no", "--port"]
    return systems


def http_systems() -> dict[str, list[str]]:
    py = sys.executable
    return {
        "evloop": [py, str(ROOT / "examples" / "http_server.py"), "--port"],
        "uvloop-httptools": [py, str(HERE / "http_uvloop.py"), "--port"],
    }


def run_resp(argv: list[str], requests: int, clients: int) -> dict[str, float]:
    port = free_port()
    proc = start([*argv, str(port)], port)
    try:
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-t", "ping,set,get", "-P", "16",
             "-n", str(requests), "-c", str(clients), "-r", "100000", "--csv"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        stop(proc)
    rates = {}
    for line in out.stdout.splitlines():
        m = re.match(r'"([A-Z_]+)","([0-9.]+)"', line)
        if m:
            rates[m.group(1)] = float(m.group(2))
    if not rates:
        raise RuntimeError(f"redis-benchmark printed no rates: {out.stdout} {out.stderr}")
    return rates


def run_http(argv: list[str], duration: float, connections: int, threads: int) -> float:
    port = free_port()
    proc = start([*argv, str(port)], port)
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
             f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=duration + 60,
        )  # fmt: skip
    finally:
        stop(proc)
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out.stdout)
    if (
        not m
        or "Non-2xx" in out.stdout
        or "Socket errors" in out.stdout
        and "read 0" not in out.stdout
    ):
        raise RuntimeError(f"wrk: {out.stdout} {out.stderr}")
    return float(m.group(1))


def summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def load() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, nproc {os.cpu_count()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300_000, help="redis-benchmark -n per test")
    ap.add_argument("--clients", type=int, default=50, help="redis-benchmark -c")
    ap.add_argument("--duration", type=float, default=3.0, help="wrk -d seconds")
    ap.add_argument("--connections", type=int, default=50, help="wrk -c")
    ap.add_argument("--threads", type=int, default=1, help="wrk -t")
    ap.add_argument("--json", default=str(ROOT / "bench-results" / "daemons.json"))
    args = ap.parse_args(argv)
    missing = [t for t in ("redis-benchmark", "wrk") if shutil.which(t) is None]
    if missing:
        print(
            f"bench-daemons: {', '.join(missing)} not installed (apt-get install redis-tools wrk)"
        )
        return 1
    print(f"before: {load()}", flush=True)
    resp: dict[str, dict[str, list[float]]] = {}
    http: dict[str, list[float]] = {}
    for r in range(args.repeat):
        for name, cmd in resp_systems().items():
            rates = run_resp(cmd, args.requests, args.clients)
            for test, v in rates.items():
                resp.setdefault(name, {}).setdefault(test, []).append(v)
            print(
                f"  repeat {r + 1} resp {name}: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()),
                flush=True,
            )
        for name, cmd in http_systems().items():
            v = run_http(cmd, args.duration, args.connections, args.threads)
            http.setdefault(name, []).append(v)
            print(f"  repeat {r + 1} http {name}: {v:,.0f} requests/s", flush=True)
    print(f"after: {load()}\n")
    print(
        f"RESP, redis-benchmark -P 16 -n {args.requests} -c {args.clients}: requests/s, median (min-max) of {args.repeat}"
    )
    names = list(resp)
    print("| test | " + " | ".join(names) + " | evloop / uvloop | evloop / redis-server |")
    print("| --- |" + " ---: |" * (len(names) + 2))
    targets = []
    for test in RESP_TESTS:
        cells, med = [], {}
        for n in names:
            vals = resp[n].get(test)
            if not vals:
                cells.append("n/a")
                continue
            m, lo, hi = summary(vals)
            med[n] = m
            cells.append(f"{m:,.0f} ({lo:,.0f}-{hi:,.0f})")
        ru = med["evloop"] / med["uvloop"] if "uvloop" in med else float("nan")
        rr = med["evloop"] / med["redis-server"] if "redis-server" in med else float("nan")
        print(f"| {test} | " + " | ".join(cells) + f" | {ru:.2f}x | {rr:.2f}x |")
        if test in ("SET", "GET"):
            targets.append((f"RESP {test} >= 1.5x uvloop", ru >= 1.5, ru))
            targets.append((f"RESP {test} within 2x of redis-server (>= 0.5x)", rr >= 0.5, rr))
    print(
        f"\nHTTP, wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s GET /: requests/s, median (min-max) of {args.repeat}"
    )
    print("| system | requests/s | evloop / system |")
    print("| --- | ---: | ---: |")
    hm = {n: summary(v) for n, v in http.items()}
    for n, (m, lo, hi) in hm.items():
        print(f"| {n} | {m:,.0f} ({lo:,.0f}-{hi:,.0f}) | {hm['evloop'][0] / m:.2f}x |")
    rh = hm["evloop"][0] / hm["uvloop-httptools"][0]
    targets.append(("HTTP >= 1.5x uvloop+httptools", rh >= 1.5, rh))
    print()
    for text, ok, ratio in targets:
        print(f"{'PASS' if ok else 'MISS'} {text}: {ratio:.2f}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(
        json.dumps(
            {"resp": resp, "http": http, "args": vars(args), "load_after": os.getloadavg()},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
