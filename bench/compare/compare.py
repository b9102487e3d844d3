#!/usr/bin/env python3
"""Runs the comparison's peers alternately and reports medians, ratios and targets.

Called by bench/compare/run, which builds the peers. Each peer is a program taking a workload's
name and printing `RESULT <workload> <unit> <value>` lines (bench/compare/WORKLOADS.md). Every
round runs every workload in every peer twice, in a mirrored order (A B C D D C B A, the order
rotating from round to round), and takes each peer's geometric mean of its two runs: every peer's
two runs are centred on the same moment, so a machine whose speed drifts steadily during the
round slows all of them alike. The table shows each peer's median over rounds, and each ratio
is the median of the per-round ratios (quell against that peer in the same round), with their
range: on a VM whose speed drifts by 2x over minutes, a ratio of runs seconds apart holds far
better than a ratio of two medians.
"""
import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time

WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W5m", "W6a", "W6b", "W7", "W8", "W9", "W10", "W11", "W12"]
TITLES = {
    "W1": "await_chain",
    "W2": "race_pending_loser",
    "W3": "spawn_cancel",
    "W4": "timeout_fast_op",
    "W5": "tcp_echo",
    "W5m": "tcp_echo, every core",
    "W6a": "cancel_inflight_read, same turn",
    "W6b": "cancel_inflight_read, in the kernel",
    "W7": "cancel_latency, 10,000 tasks",
    "W8": "any_of_pending_loser (peers: their race)",
    "W9": "task_set_next, 100,000 tasks",
    "W10": "cross_core_call, two cores",
    "W11": "cross_core_cancel, two cores",
    "W12": "bulk_read, 1 MiB reads",
}
HIGHER_IS_BETTER = {"msg/s", "msg/s@1", "scaling", "MB/s", "MB/s@one-shot"}

# The comparison's targets: (workload, unit, description, test(quell's median, quell's median
# advantage over each peer) -> bool or None). Targets relative to a limit use the per-round ratio.
TARGETS = [
    ("W1", "ns/op", "<= 1.0x minimal task", lambda q, r: r["limit"] >= 1.0 if "limit" in r else None),
    ("W2", "ns/op", "<= 60 ns", lambda q, r: q <= 60),
    ("W3", "ns/task", "<= 800 ns/task", lambda q, r: q <= 800),
    ("W3", "bytes/task", "<= 500 bytes/task", lambda q, r: q <= 500),
    ("W4", "ns/op", "<= 60 ns", lambda q, r: q <= 60),
    ("W5", "msg/s", ">= 1.0x raw liburing", lambda q, r: r["limit"] >= 1.0 if "limit" in r else None),
    ("W5", "msg/s", ">= 0.95x raw multishot", lambda q, r: r["limit-ms"] >= 0.95 if "limit-ms" in r else None),
    ("W6a", "ns/op", "<= 50 ns", lambda q, r: q <= 50),
    ("W6b", "ns/op", "<= 1.1x raw liburing", lambda q, r: r["limit"] >= 1 / 1.1 if "limit" in r else None),
    ("W6b", "ns/op", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
    ("W7", "us", "ahead of tokio", lambda q, r: r["tokio"] >= 1.0 if "tokio" in r else None),
    ("W8", "ns/op", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
    ("W9", "ns/task", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
    ("W5m", "scaling", ">= 1.8x from 1 core to all", lambda q, r: q >= 1.8),
    ("W5m", "msg/s", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
    ("W10", "ns/op", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
    ("W11", "us", "ahead of Asio and tokio",
     lambda q, r: r["asio"] >= 1.0 and r["tokio"] >= 1.0 if "asio" in r and "tokio" in r else None),
]


def run_peer(path, workload, timeout):
    try:
        r = subprocess.run([path, workload], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    if r.returncode != 0:
        return None, f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
    figures = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "RESULT" and parts[1] == workload:
            unit = parts[2].replace("µs", "us")
            try:
                figures[unit] = float(parts[3])
            except ValueError:
                pass
    return figures, None


def geometric_mean(vs):
    if any(v <= 0 for v in vs):
        return None  # not a measurement a ratio can use (better_ratio skips it too)
    return math.exp(sum(math.log(v) for v in vs) / len(vs))


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit in ("msg/s", "msg/s@1", "MB/s", "MB/s@one-shot"):
        return f"{v:,.0f}"
    if unit == "scaling":
        return f"{v:.2f}x"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def better_ratio(q, other, unit):
    """How many times better quell is than `other` (> 1: quell ahead)."""
    if q is None or other is None or q <= 0 or other <= 0:
        return None
    return q / other if unit in HIGHER_IS_BETTER else other / q


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", action="append", required=True, help="name=path")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    peers = dict(p.split("=", 1) for p in a.peer)
    names = list(peers)
    workloads = [w for w in WORKLOADS if not a.only or w in a.only.split(",")]

    samples = {}  # (workload, unit, peer) -> {round: value}
    failures = []
    started = time.time()
    for rnd in range(a.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for w in workloads:
            runs = {}  # (unit, peer) -> this round's values
            for peer in order + order[::-1]:
                figures, err = run_peer(peers[peer], w, timeout=30)
                if err:
                    failures.append(f"{peer} {w}: {err}")
                    print(f"compare: {peer} {w} FAILED: {err}", file=sys.stderr)
                    continue
                for unit, v in figures.items():
                    runs.setdefault((unit, peer), []).append(v)
            for (unit, peer), vs in runs.items():
                m = geometric_mean(vs) if len(vs) == 2 else None  # one failed half: not centred
                if m is None:
                    print(f"compare: {peer} {w} {unit}: round {rnd + 1} left out ({vs})", file=sys.stderr)
                    continue
                samples.setdefault((w, unit, peer), {})[rnd] = m
        print(f"compare: round {rnd + 1}/{a.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr)

    rows = []
    units_of = {}
    for (w, unit, _peer) in samples:
        units_of.setdefault(w, [])
        if unit not in units_of[w]:
            units_of[w].append(unit)
    for w in workloads:
        for unit in units_of.get(w, []):
            med = {p: statistics.median(samples[(w, unit, p)].values()) for p in names if (w, unit, p) in samples}
            ratios = {}  # peer -> (median, lowest, highest) of quell's per-round advantage over it
            q_rounds = samples.get((w, unit, "quell"), {})
            for p in names:
                if p == "quell" or (w, unit, p) not in samples:
                    continue
                per_round = [better_ratio(q_rounds[r], v, unit) for r, v in samples[(w, unit, p)].items() if r in q_rounds]
                per_round = [x for x in per_round if x is not None]
                if per_round:
                    ratios[p] = (statistics.median(per_round), min(per_round), max(per_round))
            rows.append((w, unit, med, ratios))

    # A column per peer that ran, the known ones first; another name (bench/compare/ab's "base":
    # an earlier quell) gets a column of its own.
    known = {"asio": ("Asio", "vs Asio"), "tokio": ("tokio", "vs tokio"), "limit": ("limit", "vs limit"),
             "limit-ms": ("limit (multishot)", "vs multishot")}
    cols = [p for p in known if p in names] + [p for p in names if p != "quell" and p not in known]
    header = (["workload", "unit", "quell"] + [known.get(p, (p, ""))[0] for p in cols]
              + [known.get(p, ("", "vs " + p))[1] for p in cols])
    lines = []
    for w, unit, med, ratios in rows:
        cells = [f"{w} {TITLES[w]}", unit] + [fmt(med.get(p), unit) for p in ["quell"] + cols]
        for p in cols:
            r = ratios.get(p)
            if r is None:
                cells.append("n/a")
            elif a.rounds > 1:
                cells.append(f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})")
            else:
                cells.append(f"{r[0]:.2f}x")
        lines.append(cells)

    target_lines = []
    for w, unit, desc, test in TARGETS:
        row = next(((m, rt) for (rw, ru, m, rt) in rows if rw == w and ru == unit), None)
        if row is None or "quell" not in row[0]:
            continue
        med, ratios = row
        ok = test(med["quell"], {p: r[0] for p, r in ratios.items()})
        shown = fmt(med["quell"], unit)
        if "multishot" in desc and "limit-ms" in ratios:
            shown += f" ({ratios['limit-ms'][0]:.2f}x)"
        elif "x " in desc and "limit" in ratios:  # a target relative to the limit
            shown += f" ({ratios['limit'][0]:.2f}x)"
        target_lines.append([f"{w} {unit}", desc, shown, "n/a" if ok is None else ("PASS" if ok else "FAIL")])
    for w, unit, med, ratios in rows:
        if "asio" in ratios:
            r = ratios["asio"][0]
            target_lines.append([f"{w} {unit}", "ahead of Asio", f"{r:.2f}x", "PASS" if r > 1 else "FAIL"])

    def table(head, body):
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        out = ["  ".join(str(c).ljust(wd) for c, wd in zip(head, widths))]
        out += ["  ".join(str(c).ljust(wd) for c, wd in zip(r, widths)) for r in body]
        return "\n".join(out)

    def markdown(head, body):
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in body]
        return "\n".join(out)

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    machine = f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"
    note = ("Medians of {} rounds, each running every peer twice in a mirrored order (A B C D D C B A). "
            "\"vs X\" is how many times better quell is than X "
            "(time: X's time / quell's; throughput: quell's / X's), the median of the per-round ratios "
            "(lowest-highest in brackets); above 1.00x quell is ahead.").format(a.rounds)
    print()
    print(table(header, lines))
    print()
    print(table(["target", "goal", "quell", "result"], target_lines))
    print()
    print(note)
    print(f"machine: {machine}; whole comparison: {time.time() - started:.0f} s of runs")

    os.makedirs(a.out, exist_ok=True)
    md = os.path.join(a.out, "compare.md")
    with open(md, "w") as f:
        f.write(f"Machine: {machine}. {note}\n\n")
        f.write(markdown(header, lines) + "\n\n")
        f.write(markdown(["target", "goal", "quell", "result"], target_lines) + "\n")
        if failures:
            f.write("\nFailures:\n\n" + "\n".join(f"- {x}" for x in failures) + "\n")

    # The plot: quell's advantage over each peer per workload (log scale; above 1 = quell ahead).
    dat = os.path.join(a.out, "compare.dat")
    with open(dat, "w") as f:
        f.write("label asio tokio limit\n")
        for w, unit, med, ratios in rows:
            vals = []
            for p in ("asio", "tokio", "limit"):
                r = ratios.get(p)
                vals.append("NaN" if r is None else f"{r[0]:.4f}")
            label = w if len(units_of[w]) == 1 else f"{w}:{unit.split('/')[0]}"
            f.write(f"{label} {' '.join(vals)}\n")
    png = os.path.join(a.out, "compare.png")
    # gnuplot refuses a column with no value at all (the limits have none for W10 and W11).
    titles = {"asio": "vs Boost.Asio 1.81", "tokio": "vs tokio 1.24", "limit": "vs limit (minimal task / raw liburing)"}
    series = []
    for col, p in enumerate(("asio", "tokio", "limit"), start=2):
        if any(p in ratios for _, _, _, ratios in rows):
            src = f"'{dat}'" if not series else "''"
            series.append(f"{src} using {col}{':xtic(1)' if not series else ''} title '{titles[p]}'")
    plot_series = ", ".join(series)
    script = f"""
set terminal pngcairo size 1000,520 font ',10'
set output '{png}'
set title "quell vs peers: how many times better quell is (log scale, above 1 = quell ahead)"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set logscale y 10
set yrange [0.01:1000]
set grid ytics
set key top left
set xtics rotate by -30
plot {plot_series}, 1 with lines lc rgb 'black' notitle
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
        print(f"wrote {md} and {png}")
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"wrote {md}; the plot failed: {e}", file=sys.stderr)

    if failures:
        print("compare: failures:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
