#!/usr/bin/env python3
"""Runs wrk against quell_gateway and the Beast peer, alternately, and prints a table (bench/http/run)."""
import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import time

ENDPOINTS = [("hello", "/hello"), ("report0", "/report?seconds=0")]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("server exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000.0 if unit == "us" else v * 1000.0 if unit == "s" else v


def wrk(url, duration, threads):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{50 * threads}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise RuntimeError(f"wrk reported errors against {url}:\n{out}")
    return rps, p99


def start(name, args, cores):
    port = free_port()
    if name == "quell":
        # --max-waiting above wrk's connections: when wrk closes its connections between runs,
        # the gateway holds their permits until each backend cancel is acknowledged (its whole
        # point), and the next run's requests queue behind them; the default 64 would answer some
        # 503 at that moment, which is admission control, not what this measures.
        cmd = [args.quell, f"--listen=127.0.0.1:{port}", "--permits=64", "--pool=64", "--max-waiting=1000",
               f"--cores={cores}"]
    else:
        cmd = [args.beast, str(port), str(cores)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_listening(port, proc)
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--quell", required=True)
    ap.add_argument("--beast", required=True)
    args = ap.parse_args()

    servers = ["quell", "beast"]
    cpus = len(os.sched_getaffinity(0))
    configs = [1] if cpus == 1 else [1, cpus]  # one core, then every core
    results = {(c, s, e): [] for c in configs for s in servers for e, _ in ENDPOINTS}
    for r in range(args.rounds):
        order = servers if r % 2 == 0 else list(reversed(servers))
        for c in configs:
            for s in order:
                proc, port = start(s, args, c)
                try:
                    for e, path in ENDPOINTS:
                        url = f"http://127.0.0.1:{port}{path}"
                        wrk(url, 1, c)  # warm-up: connections, pools, caches
                        rps, p99 = wrk(url, args.duration, c)
                        results[(c, s, e)].append((rps, p99))
                        print(f"round {r + 1} {c} core(s) {s:5} {e:8} {rps:10.0f} req/s  p99 {p99:7.3f} ms",
                              flush=True)
                finally:
                    stop(proc)

    def med(c, s, e, i):
        return statistics.median(x[i] for x in results[(c, s, e)])

    lines = [
        f"HTTP benchmark: wrk --latency with one thread and 50 keep-alive connections per server core, "
        f"{args.duration} s per run, {args.rounds} rounds alternating, medians.",
        f"Machine: {platform.machine()}, {cpus} CPUs, Linux {platform.release()}. One core: each server on one "
        f"thread; every core: quell_gateway --cores={cpus}, Beast with {cpus} threads (an io_context, "
        f"SO_REUSEPORT listener and backend pool each). wrk runs on the same CPUs.",
        "",
        "| cores | endpoint | quell req/s | Beast req/s | quell/Beast | quell p99 ms | Beast p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in configs:
        for e, path in ENDPOINTS:
            q, b = med(c, "quell", e, 0), med(c, "beast", e, 0)
            lines.append(f"| {c} | `{path}` | {q:,.0f} | {b:,.0f} | {q / b:.2f}x | {med(c, 'quell', e, 1):.3f} | "
                         f"{med(c, 'beast', e, 1):.3f} |")
    if len(configs) > 1:
        lines.append("")
        for e, path in ENDPOINTS:
            qs = med(configs[-1], "quell", e, 0) / med(1, "quell", e, 0)
            bs = med(configs[-1], "beast", e, 0) / med(1, "beast", e, 0)
            lines.append(f"Scaling 1 -> {configs[-1]} cores, `{path}`: quell {qs:.2f}x, Beast {bs:.2f}x.")
    table = "\n".join(lines)
    print()
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "http.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
