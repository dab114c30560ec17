#!/usr/bin/env python3
"""Communication and overlap in a Chrome trace of training steps (train_mnist/train_cnn --trace).

    python3 samples/trace_overlap.py trace.json

Collective nodes (allreduce, broadcast, ...) are the communication; the
overlap is the part of their time during which another executor thread ran a
compute node. Prints per-step figures averaged over the traced runs."""
import json
import sys

COLLECTIVES = {"allreduce", "broadcast", "reduce_to_root", "allgather", "reduce_scatter"}


def merged(spans):
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def main(path):
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    runs = {}
    for e in events:
        runs.setdefault(e["args"].get("run", 0), []).append(e)
    comm = overlap = wall = 0.0
    for evs in runs.values():
        wall += max(e["ts"] + e["dur"] for e in evs) - min(e["ts"] for e in evs)
        for c in (e for e in evs if e["cat"] in COLLECTIVES):
            a, b = c["ts"], c["ts"] + c["dur"]
            comm += b - a
            others = merged((max(a, e["ts"]), min(b, e["ts"] + e["dur"])) for e in evs
                            if e["tid"] != c["tid"] and e["cat"] not in COLLECTIVES and e["ts"] < b and e["ts"] + e["dur"] > a)
            overlap += sum(y - x for x, y in others)
    n = max(1, len(runs))
    print(f"{len(runs)} steps: {wall / n / 1e3:.3f} ms per step, communication {comm / n / 1e3:.3f} ms per step "
          f"({100 * comm / max(wall, 1e-9):.0f}% of the step), {100 * overlap / max(comm, 1e-9):.0f}% of it "
          f"overlapped by compute on other threads")


if __name__ == "__main__":
    main(sys.argv[1])
