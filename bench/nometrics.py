"""``sagequeue serve`` with metric recording taken out: the reference for what metrics
cost on ingest (not a product mode). Every recorder call returns at once and nothing
is written to the metrics store; everything else is the real server.

Run: ``python -m bench.nometrics serve --data-dir D --port P --role api`` (the
arguments of ``python -m sagequeue``).
"""

from __future__ import annotations

import sys
from typing import Any

from sagequeue.cli.main import main as sagequeue_main
from sagequeue.monitoring.recorder import MetricsRecorder


def _nothing(*args: Any, **kwargs: Any) -> None:
    pass


async def _flush_nothing(self: MetricsRecorder) -> None:
    pass


def main() -> int:
    MetricsRecorder.count = _nothing  # type: ignore[method-assign]
    MetricsRecorder.observe = _nothing  # type: ignore[method-assign]
    MetricsRecorder.gauge = _nothing  # type: ignore[method-assign]
    MetricsRecorder.flush = _flush_nothing  # type: ignore[method-assign]
    return sagequeue_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
