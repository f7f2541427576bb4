"""The GPU smoke check's stages, run on the CPU with every tensor factory call audited.

`llm_adapter.smoke.run_smoke` (what scripts/gpu_smoke.py runs on a GPU) trains MedTok,
tokenizes, fine-tunes both arms (alignment + QA stages, accumulation, checkpoints, resume),
reloads the adapter and scores both ways. Here it runs on the CPU inside `factory_audit`: any
torch.zeros / arange / tensor / ... called from the adapter, fine-tuning or scoring code
(llm_adapter/, qa/) without a device would be listed -- on a GPU such a tensor lands on the CPU
and meets CUDA tensors (the bug that crashed MedTok on CUDA). medtok/ is audited by
tests/test_medtok_device.py. ehr/benchmark/ (issue 21): the same audit over fit / predict /
encode_all, encode_all's batches reaching the model's device, and a training step on the meta device."""

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


# ---- ehr/benchmark (issue 21): the same audit, and the meta-device step --------------------------
def _fixture_prepared():
    from ehr.benchmark.data import cohort_from_frames
    from ehr.benchmark.prepare import prepare
    from tests.ehr_bench_fixtures import fixture_cohort, fixture_vectors

    events, splits, task, vocab = fixture_cohort(n_patients=120, seed=0)
    c = cohort_from_frames("fixture", events, splits)
    return c, task, fixture_vectors(vocab), prepare(c, [task], ["flat", "medtok"], vectors=fixture_vectors(vocab))


def test_ehr_benchmark_fit_predict_encode_make_no_deviceless_tensor():
    from ehr.benchmark.models.encoder import ModelConfig
    from ehr.benchmark.models.transformer import TransformEHR
    from ehr.benchmark.tokenizers import make_tokenizer
    from ehr.benchmark.train import TrainConfig, fit, n_outputs, predict
    from ehr.benchmark.transfer import encode_all

    _, _, _, prep = _fixture_prepared()
    b = prep.bundles[0]
    d = b.data
    mcfg = ModelConfig(d_model=16, layers=1, heads=2, ff=32)
    # module construction is exempt (PyTorch's convention: parameters are made, then moved with .to())
    torch.manual_seed(0)
    nets = [TransformEHR(make_tokenizer(tok, mcfg.d_model, prep.space, b.seen, prep.resources),
                         n_outputs(d.kind, len(d.classes)), mcfg) for tok in ("flat", "medtok")]
    with factory_audit(("ehr/benchmark",)) as audit:
        for net in nets:
            net = fit(net, d, TrainConfig(max_epochs=1, patience=1), seed=0)["model"]
            te = d.rows("held_out")
            p = predict(net, d, te)
            f = encode_all(net, d, te)
            assert len(p) == len(te) and f.shape == (len(te), mcfg.d_model)
    assert audit.calls == []


def test_encode_all_sends_batches_to_the_models_device_and_returns_numpy():
    """`fit` may leave the model on CUDA: encode_all must move each batch there and bring the
    features back (the crash of issue 21). A model on the meta device stands in for CUDA."""
    from ehr.benchmark.transfer import encode_all

    _, _, _, prep = _fixture_prepared()
    d = prep.bundles[0].data

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1, device="meta"))
            self.cfg = type("C", (), {"d_model": 4})()
            self.devices = set()

        def encode(self, batch):
            self.devices |= {v.device.type for v in batch.values()}
            return torch.ones(len(batch["codes"]), 4, device=self.w.device)

    net = Net()
    rows = d.rows("held_out")
    try:
        encode_all(net, d, rows)
    except NotImplementedError as e:  # meta tensors cannot be copied out: the batch reached the device
        assert "meta" in str(e).lower()
    assert net.devices == {"meta"}


def test_ehr_benchmark_training_step_on_the_meta_device():
    from ehr.benchmark.models.encoder import ModelConfig
    from ehr.benchmark.models.transformer import TransformEHR
    from ehr.benchmark.tokenizers import make_tokenizer
    from ehr.benchmark.train import loss_fn, n_outputs, to_batch

    _, _, _, prep = _fixture_prepared()
    b = prep.bundles[0]
    d = b.data
    mcfg = ModelConfig(d_model=16, layers=1, heads=2, ff=32)
    for tok in ("flat", "medtok"):
        net = TransformEHR(make_tokenizer(tok, mcfg.d_model, prep.space, b.seen, prep.resources),
                           n_outputs(d.kind, len(d.classes)), mcfg).to("meta")
        batch = to_batch(d, d.rows("train")[:8], "meta")
        y = batch.pop("y")
        loss = loss_fn(d.kind, net(batch), y)
        loss.backward()
        assert loss.device.type == "meta"
