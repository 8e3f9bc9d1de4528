"""sagequeue benchmark suite: ``python -m bench`` (see docs/performance.md)."""
