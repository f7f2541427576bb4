"""The evaluation harness end to end on a tiny rigged model: JSON with provenance, groups,
the shared table format (`qa.report`), comparison, saved-results tables."""

import hashlib
import json
import math

import pytest
import torch

from medbase.hashing import file_digest
from qa.datasets import load_dataset
from qa.harness import (EvalConfig, compare_results, evaluate, evaluate_questions, format_table, load_results,
                         save_results, table_of_saved)
from medbase.provenance import files_fingerprint, questions_fingerprint
from qa.results_format import accuracy_cell, accuracy_table, comparison_block
from qa.types import MCQuestion
from tests.conftest import char_tokenizer, tiny_llama


def _always(tok, letter: str):
    """A tiny model whose output layer always prefers `letter`."""
    m = tiny_llama()
    head = torch.nn.Linear(64, m.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids(letter)] = 5.0
    m.lm_head = head
    return m


def _questions():
    # answers: 6 x C, 4 x A; two splits, two difficulties
    answers = [2, 2, 2, 2, 2, 2, 0, 0, 0, 0]
    return [MCQuestion(f"q{i}", f"Question {i}?", ["w", "x", "y", "z"], answer=a,
                       split="test" if i < 5 else "train", meta={"difficulty": "hard" if i % 2 else "easy"})
            for i, a in enumerate(answers)]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def test_evaluate_questions_groups_and_comparison(tok):
    qs = _questions()
    rc = evaluate_questions(_always(tok, "C"), tok, qs, system="always-C", batch_size=3, n_boot=1000, progress=False)
    ra = evaluate_questions(_always(tok, "A"), tok, qs, system="always-A", batch_size=4, n_boot=1000, progress=False)
    assert rc["overall"]["accuracy"] == 0.6 and ra["overall"]["accuracy"] == 0.4
    # test = q0..q4 (all C), train = q5..q9 (one C, four A)
    assert rc["groups"]["split:test"]["accuracy"] == 1.0 and rc["groups"]["split:train"]["accuracy"] == 0.2
    assert rc["groups"]["difficulty:easy"]["n"] == 5
    assert [r["pred"] for r in rc["per_question"]] == [2] * 10
    assert len(rc["per_question"][0]["letter_logprobs"]) == 4
    assert rc["letter_counts"] == {"pred": {"C": 10}, "answer": {"A": 4, "C": 6}}
    cmp = compare_results(rc, ra, n_boot=1000)
    assert cmp["overall"]["diff"] == pytest.approx(-0.2)
    # discordant: 6 only-C, 4 only-A -> exact McNemar p = 2 * P[X <= 4 | n = 10] = 2 * 386/1024
    assert cmp["overall"]["mcnemar_p"] == pytest.approx(2 * 386 / 1024)
    assert cmp["groups"]["split:test"]["diff"] == -1.0
    table = format_table([rc, ra], n_boot=1000)
    assert "always-C" in table and "60.0 [" in table and "always-A vs always-C" in table
    assert "-20.0 [" in table and "split:test" in table and "difficulty:easy" in table


def test_evaluate_writes_json_from_a_file_dataset(tok, tmp_path, capsys):
    data = tmp_path / "set.jsonl"
    data.write_text("\n".join(json.dumps({"question": q.question, "options": q.options, "answer": q.answer,
                                          "split": q.split}) for q in _questions()))
    out = tmp_path / "res.json"
    cfg = EvalConfig(dataset="mc_file", data_path=str(data), split="test", batch_size=2, n_boot=500,
                     system="always-C", output=str(out))
    res = evaluate(cfg, model=_always(tok, "C"), tokenizer=tok)
    assert res["n"] == 5 and res["overall"]["accuracy"] == 1.0
    saved = load_results(out)
    assert saved["overall"] == res["overall"] and saved["config"]["split"] == "test"
    assert not math.isnan(saved["overall"]["ci_low"])
    assert "always-C" in capsys.readouterr().out
    prov = saved["provenance"]
    assert prov["seeds"] == {"bootstrap": 0} and prov["torch_threads"] == torch.get_num_threads()
    assert prov["versions"]["transformers"] and prov["device"] == "cpu"
    assert prov["fingerprints"]["data_file"] == files_fingerprint([data])
    scored = load_dataset("mc_file", str(data), split="test")
    assert prov["fingerprints"]["questions"] == questions_fingerprint(scored) != questions_fingerprint(scored[:4])


def test_generation_mode_through_harness(tok):
    res = evaluate_questions(_always(tok, "A"), tok, _questions(), mode="generate", n_boot=500, progress=False,
                             max_new_tokens=1)
    assert res["overall"]["accuracy"] == 0.4 and res["per_question"][0]["text"].startswith("A")


def test_config_validation():
    with pytest.raises(ValueError):
        EvalConfig(batch_size=0)
    with pytest.raises(ValueError):
        EvalConfig(mode="vote")
    with pytest.raises(ValueError):
        EvalConfig(dtype="int8")
    assert EvalConfig().system_name == "smollm2-135m"


def test_table_of_saved_runs(tok, tmp_path):
    qs = _questions()
    paths = []
    for letter in "CA":
        r = evaluate_questions(_always(tok, letter), tok, qs, system=f"always-{letter}", n_boot=500, progress=False)
        paths.append(str(save_results(r, tmp_path / f"{letter}.json")))
    out = table_of_saved(paths, n_boot=500)
    assert "always-A vs always-C" in out and "p=0.754" in out  # 2 * 386/1024 = 0.7539
    merged = table_of_saved([str(save_results(evaluate_questions(_always(tok, "C"), tok, part, system="C",
                                                                 n_boot=500, progress=False), tmp_path / f"p{i}.json"))
                             for i, part in enumerate((qs[:5], qs[5:]))], merge_to=tmp_path / "m.json", n_boot=500)
    assert load_results(tmp_path / "m.json")["n"] == 10 and "60.0 [" in merged


def test_report_format_by_hand():
    a = {"accuracy": 0.5133, "ci_low": 0.457, "ci_high": 0.5699, "n": 300, "n_correct": 154}
    assert accuracy_cell(a) == "51.3 [45.7, 57.0] n=300" and accuracy_cell(None) == "-"
    table = accuracy_table({"lora+prefix": {"test": a}, "lora": {}}, ["test"], row_label="arm")
    assert table.splitlines() == ["arm          test", "-----------  -----------------------",
                                  "lora+prefix  51.3 [45.7, 57.0] n=300", "lora         -"]
    p = {"diff": 0.17, "ci_low": 0.127, "ci_high": 0.213, "mcnemar_p": 1.56e-11, "n": 300, "a_only": 2, "b_only": 53}
    assert comparison_block("lora+prefix", "lora", {"test": p}).splitlines()[1] == (
        "  test  +17.0 [+12.7, +21.3]  p=1.56e-11  n=300  (only lora+prefix right 53, only lora right 2)")


def test_files_fingerprint_follows_the_bytes(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("[1]")
    first = files_fingerprint([f])
    assert first == hashlib.sha256(f"a.json\0{file_digest(f)}\n".encode()).hexdigest()
    assert file_digest(f) == hashlib.sha256(b"[1]").hexdigest()
    f.write_text("[2]")
    assert files_fingerprint([f]) != first


def test_merge_results_recomputes_groups(tok):
    from qa.harness import merge_results

    qs = _questions()
    m = _always(tok, "C")
    a = evaluate_questions(m, tok, qs[:5], system="C", n_boot=500, progress=False)
    b = evaluate_questions(m, tok, qs[5:], system="C", n_boot=500, progress=False)
    merged = merge_results([a, b], n_boot=500)
    whole = evaluate_questions(m, tok, qs, system="C", n_boot=500, progress=False)
    assert merged["n"] == 10 and merged["overall"] == whole["overall"] and merged["groups"] == whole["groups"]
    with pytest.raises(ValueError, match="more than one run"):
        merge_results([a, a])
