"""Helpers that run real services for sagequeue's tests and benchmarks (never used by
``sagequeue serve``). They live in the package so that ``tests/`` and ``bench/`` both
import them without either importing the other."""
