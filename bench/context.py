"""What every scenario gets: where to write, quick or full, and the rows so far."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.profiling import Profiler, py_spy
from bench.report import Row

CONNECTION_LEVELS = (1, 8, 64)
T = TypeVar("T", int, float)


@dataclass
class Bench:
    work_dir: Path  # scratch space (data dirs, big files), removed at the end
    quick: bool = False
    profile_dir: Path | None = None  # when set, py-spy profiles of the sagequeue rows
    rows: list[Row] = field(default_factory=list)
    # Figures later scenarios compare with (e.g. "bare" -> {connections: LoadResult}).
    cache: dict[str, Any] = field(default_factory=dict)
    # What scenarios share and the run stops at its end (e.g. the PostgreSQL server).
    cleanup: ExitStack = field(default_factory=ExitStack)

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    def profiler(self, pid: int, name: str) -> Profiler | None:
        """A py-spy profiler of ``pid`` when profiling was asked for (and py-spy exists)."""
        if self.profile_dir is None or py_spy() is None:
            return None
        return Profiler(pid, self.profile_dir / f"{name}.raw")

    def scale(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        status = row.note if row.value is None else f"{row.value} {row.metric}"
        print(f"  {row.scenario:<10} {row.name}: {status}", flush=True)
        return row
