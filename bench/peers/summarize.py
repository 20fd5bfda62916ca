#!/usr/bin/env python3
"""Table of the peers' JSON lines: coordinate-steps per second by implementation and size, and
the engine's ratio to each peer. Markdown, for bench/RESULTS.md.

    summarize.py [--cpu] FILE [FILE ...]   (several files: the median of their measurements)

--cpu: coordinate-steps per CPU-second of the process (cpu_ms_per_iter) instead of per second of
wall time; with one thread, a measure of the work done that holds on a shared machine."""
import json
import statistics
import sys

ORDER = ["ml2o", "torch-eager", "torch-compile", "jax"]


def main(paths, cpu=False):
    runs = {}  # (peer, coordinates) -> [coord_steps_per_s]
    notes = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if r.get("bench") != "peers":
                    continue
                key = (r["peer"], r.get("coordinates"))
                if cpu and r.get("cpu_ms_per_iter"):
                    rate = r["coordinates"] * r["T"] / (r["cpu_ms_per_iter"] * 1e-3)
                    runs.setdefault(key, []).append(rate)
                elif not cpu and "coord_steps_per_s" in r:
                    runs.setdefault(key, []).append(r["coord_steps_per_s"])
                elif "error" in r or "skipped" in r:
                    notes[key] = r.get("error") or r.get("skipped")
    peers = [p for p in ORDER if any(k[0] == p for k in list(runs) + list(notes))]
    sizes = sorted({k[1] for k in list(runs) + list(notes) if k[1] is not None})
    med = {k: statistics.median(v) for k, v in runs.items()}
    unit = "coord-steps/CPU-s" if cpu else "coord-steps/s"
    head = ["coordinates"] + [f"{p} ({unit})" for p in peers] + \
        [f"ml2o / {p}" for p in peers if p != "ml2o"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for c in sizes:
        row = [f"{c:,}"]
        for p in peers:
            row.append(f"{med[(p, c)]:.3g}" if (p, c) in med else notes.get((p, c), "-")[:40])
        for p in peers:
            if p == "ml2o":
                continue
            ok = ("ml2o", c) in med and (p, c) in med
            row.append(f"{med[('ml2o', c)] / med[(p, c)]:.2f}x" if ok else "-")
        print("| " + " | ".join(row) + " |")
    for (p, c), why in notes.items():
        if c is None:
            print(f"\n{p}: {why}")


if __name__ == "__main__":
    use_cpu = "--cpu" in sys.argv[1:]
    files = [a for a in sys.argv[1:] if a != "--cpu"]
    if not files:
        sys.exit(__doc__)
    main(files, use_cpu)
