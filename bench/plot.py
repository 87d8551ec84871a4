"""Plot TTFT and TBT per input size from the tables in docs/benchmarks.md.

    .venv/bin/python bench/plot.py [--results docs/benchmarks.md] [--out docs/latency.png]

Every table with "px", "TTFT median" and "TBT median" columns becomes one line per mode
(its heading names the machine), so new machines' tables appear once appended. Needs
matplotlib (pip install matplotlib).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tables(text: str):
    """(heading, rows as dicts) for each Markdown table under a ### heading."""
    heading, header, rows = "", None, []
    for line in text.splitlines() + [""]:
        if line.startswith("### "):
            heading = line[4:].strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif not set(line) <= set("|-: "):
                rows.append(dict(zip(header, cells)))
            continue
        if header is not None:
            yield heading, rows
            header, rows = None, []


def milliseconds(cell: str) -> float | None:
    m = re.match(r"([0-9.]+) ms", cell or "")
    return float(m.group(1)) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "latency.png"))
    args = ap.parse_args()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench/plot.py needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    series: dict[str, list[tuple[int, float, float]]] = {}
    for heading, rows in tables(Path(args.results).read_text()):
        machine = "H100" if "H100" in heading else "CPU" if "CPU" in heading or "mlx" in heading else heading[:20]
        engine = "mlx" if "mlx" in heading else "torch" if "torch" in heading else ""
        if "tiny" in heading:
            engine += " (tiny LM)"
        for row in rows:
            px, ttft, tbt = row.get("px") or row.get("input px"), milliseconds(row.get("TTFT median")), \
                milliseconds(row.get("TBT median"))
            if not px or not px.isdigit() or ttft is None or tbt is None:
                continue
            mode = row.get("mode", "")
            if "short prompt" in mode:
                continue
            label = f"{machine} {engine} {mode}".strip()
            series.setdefault(label, []).append((int(px), ttft, tbt))
    if not series:
        print(f"{args.results}: no tables with px, TTFT and TBT columns", file=sys.stderr)
        return 2
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    import statistics

    for label, points in sorted(series.items()):
        sizes = sorted({p[0] for p in points})  # several runs of one size: their median
        ttft = [statistics.median(p[1] for p in points if p[0] == s) for s in sizes]
        tbt = [statistics.median(p[2] for p in points if p[0] == s) for s in sizes]
        left.plot(sizes, ttft, marker="o", label=label)
        right.plot(sizes, tbt, marker="o", label=label)
    for ax, title in ((left, "time to first token (ms)"), (right, "time between tokens (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("input size (px)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("pete-osc latency per input size (docs/benchmarks.md)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(series)} series)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
