"""The text-embedding stage's thread option (issue 21): default unchanged, "free" picks the idle cores."""

from __future__ import annotations

import os

import torch

from medtok.model import text_encoder as te


def test_free_threads_subtract_the_load_of_other_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert te.free_cpu_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert te.free_cpu_threads() == 2 and te.free_cpu_threads(max_threads=1) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert te.free_cpu_threads() == 1  # never 0


def test_intra_op_threads_sets_and_restores(monkeypatch):
    before = torch.get_num_threads()
    with te.intra_op_threads(None) as n:
        assert n == before == torch.get_num_threads()
    with te.intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setattr(te, "free_cpu_threads", lambda max_threads=None: 1)
    with te.intra_op_threads("free") as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
