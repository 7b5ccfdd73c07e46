"""Latency distribution plot for BENCHMARKS.md, from the bench binary's samples.csv.

usage: plot_latency.py SAMPLES_CSV OUT_PNG
One panel per measurement (Converse at concurrency 1, ConverseStream time to first event):
the cumulative distribution of each target's latencies on a log axis.
"""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"direct": "tab:gray", "relay": "tab:blue", "nginx": "tab:green", "litellm": "tab:red"}
TITLES = {"converse_c1": "Converse, concurrency 1", "ttfe": "ConverseStream, time to first event"}


def main(src, out):
    data = defaultdict(lambda: defaultdict(list))
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            data[row["kind"]][row["target"]].append(float(row["micros"]))
    kinds = [k for k in TITLES if k in data]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for target, values in data[kind].items():
            values.sort()
            n = len(values)
            ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                    label=f"{target} (n={n})", color=COLORS.get(target))
        ax.set_xscale("log")
        ax.set_xlabel("latency (µs, log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(TITLES[kind])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
