#!/usr/bin/env python3
"""plot-bench.py: the PNG plots of BENCHMARKS.md.

  scripts/plot-bench.py --harness SUMMARY.md [--before SUMMARY.md] \
      [--scaling BENCH.txt] [--extra LABEL=SUMMARY.md ...] --out DIR

--harness   summary.md of a side-by-side harness run (bench/run.sh) with
            the router column: medians and [min..max] per column.
--before    summary.md of a run of the router before the changes: its
            router column is drawn as "router (before)".
--scaling   `go test -bench 'Pipeline' ./pipeline` output: packets per
            second with 1 and 2 workers per traffic kind.
--extra LABEL=SUMMARY.md  (repeatable) the router column of another run,
            drawn as LABEL (e.g. "1 worker=docs/perf/harness-1worker.md").
--out       directory for throughput.png and scaling.png.

Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import collections
import os
import re
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = [
    ("TCP 1 stream (Gbit/s)", "TCP, 1 stream", "Gbit/s"),
    ("TCP 4 streams (Gbit/s)", "TCP, 4 streams", "Gbit/s"),
    ("UDP 64 B received (kpps)", "UDP, 64-byte datagrams received", "kpps"),
    ("New TCP conns (conn/s)", "New TCP connections", "conn/s"),
]

CELL = re.compile(r"([-\d.]+) \[([-\d.]+)\.\.([-\d.]+)\]")


def read_summary(path):
    """Returns {column: {metric: (median, min, max)}} from the first table."""
    cols, out = None, collections.defaultdict(dict)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("|"):
                if cols and out:
                    break
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] == "metric":
                if cols:
                    break  # the ratio tables follow
                cols = cells[1:]
                continue
            if cols is None or cells[0].startswith("---"):
                continue
            for col, cell in zip(cols, cells[1:]):
                m = CELL.match(cell)
                if m:
                    out[col][cells[0]] = tuple(float(x) for x in m.groups())
    return out


def read_bench(path):
    """Returns {(kind, workers): [Mpps, ...]} from BenchmarkPipeline lines."""
    runs = collections.defaultdict(list)
    pat = re.compile(r"^BenchmarkPipeline/(.+)/workers=(\d+)-\d+\s+\d+\s+.*?\s([\d.]+) Mpps\s")
    with open(path) as f:
        for line in f:
            m = pat.match(line)
            if m:
                runs[(m.group(1), int(m.group(2)))].append(float(m.group(3)))
    return runs


def plot_throughput(after, before, extra, out):
    order = ["kernel-ct", "kernel-noct", "tun-offload", "tun-nooffload", "gvisor-fwd"]
    cols = [(c, after[c]) for c in order if c in after]
    if before and "router" in before:
        cols.append(("router (before)", before["router"]))
    for label, vals in extra:
        if "router" in vals:
            cols.append(("router, " + label, vals["router"]))
    cols.append(("router", after["router"]))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, (key, title, unit) in zip(axes.flat, METRICS):
        names, med, lo, hi, colors = [], [], [], [], []
        for name, vals in cols:
            if key not in vals:
                continue
            m, a, b = vals[key]
            names.append(name)
            med.append(m)
            lo.append(m - a)
            hi.append(b - m)
            colors.append("tab:red" if name == "router" else "tab:orange" if name.startswith("router") else
                          "tab:blue" if name.startswith("tun") else "tab:gray")
        x = range(len(names))
        ax.bar(x, med, yerr=[lo, hi], color=colors, capsize=3)
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ref = dict(zip(names, med)).get("tun-offload")
        if ref:
            ax.axhline(ref, color="tab:blue", linestyle=":", linewidth=1)
    fig.suptitle("Side-by-side harness: median of the rounds, bars from min to max\n"
                 "(columns other than --harness come from their own runs: compare them with care)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=100)
    plt.close(fig)


def plot_scaling(runs, out):
    kinds = sorted({k for k, _ in runs}, key=lambda k: (k.split("/")[0], k))
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.38
    for i, kind in enumerate(kinds):
        for j, w in enumerate((1, 2)):
            vals = runs.get((kind, w))
            if not vals:
                continue
            m = statistics.median(vals)
            ax.bar(i + (j - 0.5) * width, m, width, color=("tab:blue", "tab:red")[j],
                   label=f"{w} worker{'s' if w > 1 else ''}" if i == 0 else None)
            if w == 2 and runs.get((kind, 1)):
                r = m / statistics.median(runs[(kind, 1)])
                ax.text(i + 0.5 * width, m, f"{r:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels(kinds, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("million packets per second (median)")
    ax.set_title("In-memory pipeline (BenchmarkPipeline): 1 and 2 workers, one queue per worker")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "scaling.png"), dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--harness", required=True)
    ap.add_argument("--before")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--scaling")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    after = read_summary(a.harness)
    before = read_summary(a.before) if a.before else None
    extra = [(x.split("=", 1)[0], read_summary(x.split("=", 1)[1])) for x in a.extra]
    plot_throughput(after, before, extra, a.out)
    if a.scaling:
        plot_scaling(read_bench(a.scaling), a.out)


if __name__ == "__main__":
    main()
