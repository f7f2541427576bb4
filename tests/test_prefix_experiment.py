"""The prefix experiment's runner on a tiny LLaMA + char tokenizer + the toy vocabulary:
equal budgets read off the recorded curves, the constant control, resume cell by cell, no
test code / answer text in any training question or caption, the summary table."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_adapter.experiment.grid import ExperimentConfig, cell_finetune_config, cell_name, cells, leak_check, run_experiment
from llm_adapter.experiment.summary import load_cells, summarize
from llm_adapter.smoke import TINY_MEDTOK
from llm_adapter.text_baseline import caption_texts, text_caption_examples
from llm_adapter.vectors import ConstantVectors, MedTokVectors, RandomVectors, TableVectors
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa, code_split, norm_text
from tests.conftest import char_tokenizer, tiny_llama

H = 32
ARMS = ("no_prefix", "text_baseline", "prefix_constant", "prefix_random", "prefix_medtok")


def _finetune_overrides() -> dict:
    return {
        "adapter": {"base_model": "tiny", "hidden_size": H, "max_codes": 1,
                    "projector": {"hidden_size": H, "tokens_per_code": 2, "mlp_hidden": 32},
                    "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}},
        "align": {"steps": 3, "batch_size": 4, "lr": 1e-3, "warmup": 0},
        "qa": {"steps": 2, "batch_size": 4, "lr": 1e-3, "warmup": 1},
        "align_codes": 16, "train_eval_size": 4, "eval_batch_size": 8, "bf16_autocast": False,
        "scorings": ["option", "letter"],
    }


def _cfg(tmp: Path, **kw) -> ExperimentConfig:
    base = dict(results_dir=str(tmp / "results"), work_dir=str(tmp / "work"), medtok_dir=str(tmp / "medtok"),
                arms=ARMS, settings=("today", "strict"), seeds=(0, 1), finetune=_finetune_overrides(),
                medtok_steps=2, medtok_batch_size=32, medtok_model=dict(TINY_MEDTOK), checkpoint_every=2,
                threads=None, enforce_minimum=False)
    base.update(kw)
    return ExperimentConfig(**base)


class Toy:
    """The toy inputs the runner is given instead of the real vocabulary / MedTok / LM."""

    def __init__(self):
        self.vocab, self.graph = toy_vocabulary()
        self.emb = np.random.default_rng(0).normal(size=(len(self.vocab), TINY_MEDTOK["text_dim"])).astype(np.float32)
        self.lm, self.tok = tiny_llama(vocab_size=256, hidden_size=H, num_layers=2, seed=0), char_tokenizer()

    def questions(self, fcfg):
        qs = build_ontology_qa(self.vocab, OntologyQAConfig(systems=("ICD10CM",), n_options=2, seed=fcfg.ontology["seed"],
                                                            sizes={"train": 24, "validation": 0, "test": 8}))
        return self.vocab, [q for q in qs if q.split == "train"], {"test": [q for q in qs if q.split == "test"]}

    def vectors(self, arm, fcfg, medtok_dir):
        if medtok_dir is None:
            return None
        tok = MedTokTokenizer.from_pretrained(medtok_dir, vocab=self.vocab, graph=self.graph, text_embeddings=self.emb,
                                              progress=False, cache_table=False)
        return MedTokVectors(tok, identity=str(medtok_dir.resolve()))

    def kwargs(self):
        return dict(lm=self.lm, tokenizer=self.tok, questions_fn=self.questions, vectors_fn=self.vectors,
                    medtok_inputs={"vocab": self.vocab, "graph": self.graph, "text_embeddings": self.emb})


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefix_experiment")
    toy = Toy()
    cfg = _cfg(tmp)
    ran = run_experiment(cfg, **toy.kwargs())
    return cfg, toy, ran


def test_constant_control_is_identical_for_every_code():
    codes = ["ICD10CM:A00.1", "ICD10CM:E11.9", "ATC:A10BA02", "anything"]
    const = ConstantVectors(num_groups=4, dim=64, seed=0)
    v = const.vectors(codes)
    assert v.shape == (4, 4, 64) and all(torch.equal(v[0], v[i]) for i in range(4))
    assert float(v.std()) > 0.5  # a real random vector, not zeros
    table = TableVectors.from_source(const, codes)
    assert all(torch.equal(table.table[0], table.table[i]) for i in range(len(table.code_ids)))
    # the per-code control differs code by code (so the constant one is the only code-blind source)
    r = RandomVectors(num_groups=4, dim=64, seed=0).vectors(codes)
    assert not torch.equal(r[0], r[1])


def test_grid_order_and_shared_cells(tmp_path):
    cfg = _cfg(tmp_path)
    names = [cell_name(*c) for c in cells(cfg)]
    # non-MedTok arms serve both settings: one cell each per seed; MedTok arms one per setting
    assert len(names) == len(set(names)) == 2 * (4 + 2)
    assert names[:6] == ["no_prefix__shared__seed0", "text_baseline__shared__seed0", "prefix_constant__shared__seed0",
                         "prefix_random__shared__seed0", "prefix_medtok__today__seed0", "prefix_medtok__strict__seed0"]
    with pytest.raises(ValueError, match="below today's budget"):
        _cfg(tmp_path, enforce_minimum=True)


def test_equal_budget_on_recorded_curves(grid):
    cfg, _, ran = grid
    recs = load_cells(cfg.results_dir)
    assert set(recs) == set(ran) and len(recs) == 12
    budget = cfg.budget_examples()
    assert budget == 3 * 4 + 2 * 4
    for rec in recs.values():
        b = rec["budget"]
        assert b["total"]["examples"] == budget and b["total"]["steps"] == 5, rec["cell"]
        stages = {k: (v["steps"], v["examples"]) for k, v in b["stages"].items()}
        if rec["arm"] == "no_prefix":
            assert stages == {"qa": (5, 20)}  # the alignment budget as extra QA steps
            assert b["total"]["prefix_tokens"] == 0
        else:
            assert stages == {"align": (3, 12), "qa": (2, 8)}
        if rec["arm"].startswith("prefix_"):
            # every caption has its code's 2 soft positions; QA questions carry one code each
            assert b["stages"]["align"]["prefix_tokens"] == 12 * 2 and b["stages"]["qa"]["prefix_tokens"] == 8 * 2
        else:
            assert b["total"]["prefix_tokens"] == 0
        assert b["total"]["tokens"] > 0 and b["total"]["tokens_with_prefix"] == b["total"]["tokens"] + b["total"]["prefix_tokens"]
        for sc in ("option", "letter"):
            s = rec["scores"][sc]["test"]
            assert s["n"] == 8 == len(s["pred"]) and s["accuracy"] == pytest.approx(np.mean(s["correct"]))


def test_medtok_stage_strictly_unseen(grid):
    cfg, toy, _ = grid
    recs = load_cells(cfg.results_dir)
    today, strict = recs["prefix_medtok__today__seed0"]["medtok"], recs["prefix_medtok__strict__seed0"]["medtok"]
    assert today["heldout_codes"] == 0 and strict["heldout_codes"] > 0 and today["dir"] != strict["dir"]
    assert not Path(strict["dir"]).is_absolute() and "/" not in strict["dir"]   # no machine paths in results
    held = set(json.loads((cfg.medtok_root() / strict["dir"] / "train_config.json").read_text())["heldout_codes"])
    _, _, evals = toy.questions(type("C", (), {"ontology": {"seed": 0}})())
    test_codes = {c for q in evals["test"] for c in q.codes + q.meta["option_codes"]}
    assert test_codes <= held
    # a seed trains its own MedTok
    assert recs["prefix_medtok__today__seed1"]["medtok"]["dir"] != today["dir"]


def test_no_test_code_or_answer_in_training(grid):
    cfg, toy, _ = grid
    from llm_adapter.experiment.grid import cell_finetune_config

    for arm in ("prefix_medtok", "text_baseline"):
        for seed in cfg.seeds:
            fcfg = cell_finetune_config(cfg, arm, "today", seed)
            vocab, train, evals = toy.questions(fcfg)
            rec = load_cells(cfg.results_dir)[cell_name(arm, "today", seed)]
            assert rec["leaks"] == [] and rec["n_captions"] == 12
            # the text baseline's captions, as text: no test code string, no test answer text
            excluded = {c for q in evals["test"] for c in q.codes + q.meta["option_codes"]}
            caps = caption_texts(toy.tok, text_caption_examples(toy.tok, vocab, fcfg, excluded))
            test_answers = {norm_text(q.options[q.answer]) for q in evals["test"]}
            test_codes = {c for q in evals["test"] for c in q.codes}
            assert len(caps) == 12
            for prompt, answer in caps:
                assert norm_text(answer) not in test_answers
                assert not any(c in prompt for c in test_codes)
            # not vacuous: a test question put into training is found
            planted = evals["test"][0]
            planted_train = train + [type(planted)(**{**planted.__dict__, "split": "train"})]
            assert leak_check(vocab, planted_train, evals, [])


def test_resume_skips_finished_cells(grid):
    cfg, toy, _ = grid
    path = Path(cfg.results_dir) / "prefix_constant__shared__seed1.json"
    before = json.loads(path.read_text())
    assert run_experiment(cfg, **toy.kwargs()) == []  # everything finished: nothing runs
    path.unlink()
    assert run_experiment(cfg, **toy.kwargs()) == ["prefix_constant__shared__seed1"]
    after = json.loads(path.read_text())
    assert after["scores"]["option"]["test"]["pred"] == before["scores"]["option"]["test"]["pred"]
    # another seed: only its cells run
    cfg3 = ExperimentConfig.from_dict({**cfg.to_dict(), "seeds": [0, 1, 2], "arms": ["no_prefix"]})
    assert run_experiment(cfg3, **toy.kwargs()) == ["no_prefix__shared__seed2"]


def test_summary_table(grid):
    cfg, _, _ = grid
    text = summarize(cfg)
    assert (Path(cfg.results_dir) / "SUMMARY.md").read_text() == text
    assert (Path(cfg.results_dir) / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [line for line in text.splitlines() if line.startswith("| prefix_medtok | strict | option")]
    assert len(rows) == 1 and "(n=2)" in rows[0] and "p=" in rows[0]
    assert "| no_prefix | qa 5 x 4 | 5 | 20 |" in text


# ---- the relational task ------------------------------------------------------------------------
REL = {"types": ["parent_title", "sibling"], "sizes": {"train": 40, "validation": 0, "test": 8}}


def test_relational_task_defaults_and_validation(tmp_path):
    rel = ExperimentConfig(task="relational")
    assert rel.settings == ("today", "strict_edges") and rel.results_dir.endswith("_relational")
    assert "ICD9CM" in rel.medtok_systems and "CCS" in rel.medtok_systems
    ont = ExperimentConfig()
    assert ont.settings == ("today", "strict") and ont.medtok_systems == ("ICD10CM",)
    with pytest.raises(ValueError, match="strict_edges"):
        ExperimentConfig(settings=("strict_edges",))
    with pytest.raises(ValueError, match="task"):
        ExperimentConfig(task="ontology-ish")


def test_relational_kg_task_defaults_and_strict_edges(tmp_path):
    from llm_adapter.experiment.grid import config_hash
    from llm_adapter.experiment.medtok_stage import medtok_configs
    from llm_adapter.experiment.relational import config_key

    kg = ExperimentConfig(task="relational_kg")
    assert kg.settings == ("today", "strict_edges") and kg.results_dir.endswith("_relational_kg")
    assert {"ICD10CM", "MONDO", "HETIONET"} <= set(kg.medtok_systems)
    assert config_key({}, "relational_kg")["types"] == ["hetionet_treats", "hetionet_symptom", "hetionet_anatomy",
                                                        "hetionet_gene"]
    rel = ExperimentConfig(task="relational")
    assert config_hash(kg, "no_prefix", "today", 0) != config_hash(rel, "no_prefix", "today", 0)
    # strictly unseen with edges removed: the MONDO cross-references and KG relations of test codes go
    toy = Toy()
    fcfg = cell_finetune_config(kg, "prefix_medtok", "strict_edges", 0)
    tcfg, _ = medtok_configs(kg, "both", "strict_edges", 0, toy.vocab, fcfg)
    assert tcfg.drop_edge_types == [["kg_relation", None, None], ["xref", None, None]]
    test_codes = [c for c in toy.vocab.codes["code_id"] if code_split(c) == "test"]
    assert test_codes and sorted(tcfg.drop_edges_touching) == sorted(test_codes) == sorted(tcfg.heldout_codes)
    tcfg, _ = medtok_configs(kg, "both", "today", 0, toy.vocab, fcfg)
    assert not tcfg.drop_edge_types and not tcfg.heldout_codes


def test_committed_relational_cells_still_match_todays_config():
    """The finished code-graph cells in the repository keep their config hash (the KG task was
    added beside them): a rerun of `--task relational` skips them instead of recomputing hours."""
    from llm_adapter.experiment.grid import config_hash

    cfg = ExperimentConfig(task="relational", finetune={"scorings": ["option"]})
    recs = sorted((Path(__file__).resolve().parents[1] / cfg.results_dir).glob("*__seed*.json"))
    assert len(recs) == 33
    for path in recs:
        rec = json.loads(path.read_text())
        setting = "today" if rec["setting"] == "shared" else rec["setting"]
        assert rec["config_hash"] == config_hash(cfg, rec["arm"], setting, rec["seed"]), path.name


def test_relational_cells_per_type_and_edges_removed(tmp_path):
    from llm_adapter.experiment.relational import load_relational_questions
    from llm_adapter.experiment.summary import qtype_diff_table

    toy = Toy()
    fin = _finetune_overrides()
    # larger held-out shares than 70/15/15: the toy's 192 leaves must give each split questions
    fin["ontology"] = {"systems": ["ICD10CM"], "split_fractions": [0.4, 0.2, 0.4], "sizes": {"train": 24, "validation": 0, "test": 8}}
    cfg = _cfg(tmp_path, task="relational", relational=REL, arms=("no_prefix", "prefix_medtok"), seeds=(0,),
               settings=("today", "strict", "strict_edges"), finetune=fin, medtok_systems=("ICD10CM",))
    assert [cell_name(*c) for c in cells(cfg)] == ["no_prefix__shared__seed0", "prefix_medtok__today__seed0",
                                                   "prefix_medtok__strict__seed0", "prefix_medtok__strict_edges__seed0"]
    qfn = lambda fcfg: load_relational_questions(cfg.relational, fcfg, vocab=toy.vocab, graph=toy.graph)  # noqa: E731
    ran = run_experiment(cfg, **{**toy.kwargs(), "questions_fn": qfn})
    assert len(ran) == 4
    recs = load_cells(cfg.results_dir)
    _, train, evals = qfn(type("F", (), {"ontology": fin["ontology"], "seed": 0, "train_split": "train",
                                        "eval_splits": ["test"]})())
    test_codes = {c for q in evals["test"] for c in q.codes}
    for rec in recs.values():
        assert rec["leaks"] == []
        s = rec["scores"]["option"]["test"]
        assert sorted(set(s["qtype"])) == ["parent_title", "sibling"] and s["n"] == len(evals["test"])
    # strict_edges: held out AND the is_a edges around every test-split code gone from MedTok's graph
    strict, edges = recs["prefix_medtok__strict__seed0"]["medtok"], recs["prefix_medtok__strict_edges__seed0"]["medtok"]
    assert "drop_edge_types" not in strict and edges["drop_edge_types"] == [["is_a", "ICD10CM", "ICD10CM"]]
    tc = json.loads((cfg.medtok_root() / edges["dir"] / "train_config.json").read_text())
    assert test_codes <= set(tc["drop_edges_touching"]) and test_codes <= set(tc["heldout_codes"])
    from medtok.graph_edits import drop_edges

    g = drop_edges(toy.vocab, toy.graph, tc["drop_edge_types"], tc["drop_edges_touching"])
    idx = toy.vocab.codes["code_id"].isin(test_codes).to_numpy()
    is_a = np.array(g.edge_type_names)[g.etype] == "is_a"
    assert g.num_edges < toy.graph.num_edges and not (is_a & (idx[g.src] | idx[g.dst])).any()
    # not vacuous: the unedited graph has is_a edges around those codes
    is_a0 = np.array(toy.graph.edge_type_names)[toy.graph.etype] == "is_a"
    assert (is_a0 & (idx[toy.graph.src] | idx[toy.graph.dst])).any()
    # a relational cell's hash differs from the ontology cell of the same arm/seed (other questions)
    from llm_adapter.experiment.grid import config_hash

    ont = ExperimentConfig.from_dict({**cfg.to_dict(), "task": "ontology", "relational": {}, "settings": ["today"],
                                      "results_dir": None, "work_dir": None})
    assert config_hash(cfg, "no_prefix", "today", 0) != config_hash(ont, "no_prefix", "today", 0)
    # the per-type tables: one row per arm and setting, one column per type
    text = summarize(cfg)
    assert "| parent_title | sibling |" in text and "minus no_prefix" in text
    diff = qtype_diff_table(cfg, recs, "no_prefix").splitlines()
    assert len(diff) == 2 + 3 and all(row.count("(seeds=1)") == 2 for row in diff[2:])


def test_shards_split_the_grid_without_overlap(grid):
    cfg, toy, _ = grid
    cfg3 = ExperimentConfig.from_dict({**cfg.to_dict(), "seeds": [0, 1, 3]})
    new = [cell_name(*c) for c in cells(cfg3) if c[2] == 3]
    ran0 = run_experiment(cfg3, shard=(0, 2), **toy.kwargs())
    ran1 = run_experiment(cfg3, shard=(1, 2), **toy.kwargs())
    # seed 3 is new: the two shards ran its cells between them, none twice, the rest was finished
    assert sorted(ran0 + ran1) == sorted(new) and not set(ran0) & set(ran1) and ran0 and ran1
    grid_names = [cell_name(*c) for c in cells(cfg3)]
    assert all(grid_names.index(n) % 2 == 0 for n in ran0) and all(grid_names.index(n) % 2 == 1 for n in ran1)
    with pytest.raises(ValueError, match="shard"):
        run_experiment(cfg3, shard=(2, 2), **toy.kwargs())
