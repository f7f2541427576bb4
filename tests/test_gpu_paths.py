"""The GPU smoke check's stages, run on the CPU with every tensor factory call audited.

`llm_adapter.smoke.run_smoke` (what scripts/gpu_smoke.py runs on a GPU) trains MedTok,
tokenizes, fine-tunes both arms (alignment + QA stages, accumulation, checkpoints, resume),
reloads the adapter and scores both ways. Here it runs on the CPU inside `factory_audit`: any
torch.zeros / arange / tensor / ... called from the adapter, fine-tuning or scoring code
(llm_adapter/, qa/) without a device would be listed -- on a GPU such a tensor lands on the CPU
and meets CUDA tensors (the bug that crashed MedTok on CUDA). medtok/ is audited by
tests/test_medtok_device.py."""

import torch

from llm_adapter.smoke import run_smoke
from tests.conftest import factory_audit


def test_smoke_stages_pass_on_cpu_with_no_deviceless_tensor(tmp_path):
    with factory_audit(("llm_adapter", "qa")) as audit:
        report = run_smoke("cpu", tmp_path, verbose=False)
    failed = {k: v["error"] for k, v in report.items() if not v["ok"]}
    assert failed == {}, "\n".join(f"{k}: {v}\n{report[k].get('traceback', '')}" for k, v in failed.items())
    assert set(report) == {"medtok_train", "medtok_tokenize", "finetune", "resume", "reload_score", "qa_harness"}
    assert audit.calls == []


def test_the_audit_sees_a_deviceless_call():
    from llm_adapter import inputs

    with factory_audit(("llm_adapter",)) as audit:
        torch.zeros(2)  # from tests/: not judged
        eval(compile("torch.arange(3)", inputs.__file__, "eval"), {"torch": torch})  # as if written in llm_adapter/
        eval(compile("torch.arange(3, device='cpu')", inputs.__file__, "eval"), {"torch": torch})
    assert len(audit.calls) == 1 and audit.calls[0].startswith("llm_adapter/inputs.py:1 arange")
