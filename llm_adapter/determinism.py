"""Deterministic CPU kernels: the helper lives in the base layer (`medtok.common.determinism`),
because MedTok training needs it too; imported here under its old name for the adapter code."""

from medtok.common.determinism import deterministic_on_cpu

__all__ = ["deterministic_on_cpu"]
