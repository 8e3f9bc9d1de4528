"""Benchmark results: rows (a figure beside its reference and target), the JSON file,
the Markdown table and the PNG plots."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass(slots=True)
class Row:
    """One measured figure. ``value`` is None when the scenario did not run (``note``
    says why). ``ratio`` is value / reference_value, the figure targets are stated on."""

    scenario: str
    name: str
    metric: str  # e.g. "requests/s", "p50 ms"
    value: float | None
    reference: str | None = None  # what it is compared with, e.g. "bare ASGI app (64 conn)"
    reference_value: float | None = None
    target: str | None = None  # e.g. ">= 50% of bare app"
    ratio: float | None = None
    met: bool | None = None  # None: no target, or not run
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def not_run(scenario: str, reason: str, name: str | None = None) -> Row:
        return Row(scenario, name or scenario, "", None, note=f"not run: {reason}")


def compare(value: float | None, reference_value: float | None) -> float | None:
    if value is None or not reference_value:
        return None
    return value / reference_value


@dataclass
class Results:
    date: str
    quick: bool
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "date": self.date,
            "quick": self.quick,
            "seconds": round(self.seconds, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "rows": [asdict(row) for row in self.rows],
        }

    def write(self, out_dir: Path, stem: str) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out_dir / f"{stem}.json",
            "md": out_dir / f"{stem}.md",
            "throughput": out_dir / f"{stem}-throughput.png",
            "latency": out_dir / f"{stem}-latency.png",
        }
        paths["json"].write_text(json.dumps(self.to_json(), indent=2) + "\n")
        plots = write_plots(self.rows, paths["throughput"], paths["latency"])
        paths["md"].write_text(markdown(self, {k: p for k, p in paths.items() if k in plots}))
        return {k: p for k, p in paths.items() if k in ("json", "md") or k in plots}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3g}"


def markdown(results: Results, plots: dict[str, Path] | None = None) -> str:
    lines = [
        f"# sagequeue benchmark, {results.date}" + (" (quick smoke run)" if results.quick else ""),
        "",
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; whole run "
        f"{results.seconds:.0f} s. Ratios compare figures of this same run.",
        "",
        "| Scenario | Figure | Metric | Value | Reference | Ref. value | Ratio | Target | Met |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | --- | :---: |",
    ]
    for row in results.rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        value = _fmt(row.value) if row.value is not None else row.note or "—"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"| {row.scenario} | {row.name} | {row.metric} | {value} | {row.reference or ''} "
            f"| {_fmt(row.reference_value) if row.reference_value is not None else ''} "
            f"| {ratio} | {row.target or ''} | {met} |"
        )
    notes = [row for row in results.rows if row.note and row.value is not None]
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {row.scenario} / {row.name}: {row.note}" for row in notes]
    for name, path in (plots or {}).items():
        lines += ["", f"![{name}]({path.name})"]
    return "\n".join(lines) + "\n"


def write_plots(rows: list[Row], throughput_path: Path, latency_path: Path) -> set[str]:
    """Bar charts of throughput and of latency percentiles; returns which were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn: set[str] = set()
    rate_rows = [
        r
        for r in rows
        if r.metric == "requests/s" and r.value is not None and r.details.get("plot", True)
    ]
    if rate_rows:
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rate_rows) + 1.5))
        labels = [f"{r.scenario}: {r.name}" for r in rate_rows]
        ax.barh(labels, [r.value for r in rate_rows], color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("requests/s (log scale)")
        ax.set_title("Throughput")
        ax.invert_yaxis()
        for y, row in enumerate(rate_rows):
            ax.text(row.value, y, f" {row.value:,.0f}", va="center", fontsize=8)
        fig.tight_layout()
        fig.savefig(throughput_path, dpi=100)
        plt.close(fig)
        drawn.add("throughput")
    latency_rows = [r for r in rows if r.details.get("p50_ms") is not None]
    if latency_rows:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(latency_rows) + 1.5))
        labels = [f"{r.scenario}: {r.name}" for r in latency_rows]
        ys = range(len(latency_rows))
        height = 0.27
        for offset, (pct, color) in enumerate(
            (("p50_ms", "tab:green"), ("p90_ms", "tab:orange"), ("p99_ms", "tab:red"))
        ):
            values = [max(r.details.get(pct) or 0.0, 1e-3) for r in latency_rows]
            ax.barh(
                [y + (offset - 1) * height for y in ys],
                values,
                height,
                label=pct.removesuffix("_ms"),
                color=color,
            )
        ax.set_yticks(list(ys), labels)
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log scale)")
        ax.set_title("Latency percentiles")
        ax.invert_yaxis()
        ax.legend()
        fig.tight_layout()
        fig.savefig(latency_path, dpi=100)
        plt.close(fig)
        drawn.add("latency")
    return drawn
