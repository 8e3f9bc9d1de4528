"""Sampling profiles of a server process during a measured window (py-spy, when
installed: ``pip install py-spy``), summarised as the functions that take the most time."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from bench.servers import BIN


def py_spy() -> str | None:
    candidate = BIN / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Profiler:
    """Records ``pid`` with py-spy from ``start_at`` for ``seconds`` (collapsed stacks)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self._thread: threading.Thread | None = None

    def schedule(self, start_at: float, seconds: float) -> None:
        executable = py_spy()
        if executable is None:
            return

        def record() -> None:
            time.sleep(max(0.0, start_at - time.time()))
            subprocess.run(
                [
                    executable,
                    "record",
                    "-p",
                    str(self.pid),
                    "-d",
                    str(max(1, int(seconds))),
                    "-r",
                    "250",
                    "--threads",
                    "--nonblocking",
                    "--function",
                    "-f",
                    "raw",
                    "-o",
                    str(self.out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=seconds + 60,
                check=False,
            )

        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=record, daemon=True)
        self._thread.start()

    def summary(self, top: int = 15) -> dict[str, list[tuple[str, float]]]:
        """See ``summarise``; empty when py-spy is missing or recorded nothing."""
        if self._thread is not None:
            self._thread.join()
        if not self.out.exists():
            return {}
        return summarise(self.out.read_text(), top)

    def write_text(self, path: Path, title: str, top: int = 25) -> dict[str, list]:
        summary = self.summary(top)
        if summary:
            lines = [title, ""]
            for kind, entries in summary.items():
                lines += [f"{kind}:"] + [f"  {share:5.1f}%  {frame}" for frame, share in entries]
                lines.append("")
            path.write_text("\n".join(lines))
        return summary


def summarise(collapsed: str, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Functions by share of samples: as the leaf (self time), and, among sagequeue's
    own functions, anywhere on the stack (inclusive time)."""
    total = 0
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first entry names the thread
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        leaf[frames[-1]] += count
    if not total:
        return {}
    own = Counter({f: n for f, n in inclusive.items() if "sagequeue/" in f})
    return {
        "self": [(f, round(100 * n / total, 1)) for f, n in leaf.most_common(top)],
        "inclusive (sagequeue)": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)],
    }
