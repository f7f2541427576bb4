"""MedDDx and generic multiple-choice parsers: good records, malformed ones, split rules."""

import json
import logging

import pytest

from medbase.paths import shared_data_path
from qa.datasets import load_dataset
from qa.datasets.common import DatasetFileError, MalformedRecord, resolve_answer
from qa.datasets.mc_file import load_mc_file, parse_mc_bytes, parse_mc_records
from qa.datasets.meddx import difficulty, load_meddx, parse_meddx, parse_meddx_bytes, split_query

GOOD = [
    {"query": "Which drug treats X?\nA: alpha\nB: beta\nC: gamma\nD: delta\n", "answer": "C", "sim_level_std": 0.05},
    {"query": "Line one of a stem.\nLine two: still the stem\nA: one\nB: two\nC: three\nD: four", "answer": "A",
     "sim_level_std": 0.01},
    {"query": "Which gene?\nA: ADH1A\nB: ADH1C\n", "answer": "b", "sim_level_std": 0.03},
]
MALFORMED = [
    {"query": "No options at all here", "answer": "A", "sim_level_std": 0.03},          # missing options
    {"query": "Q?\nA: x\nB: y\nC: z\n", "answer": "D", "sim_level_std": 0.03},           # answer not among options
    {"query": "\nA: x\nB: y\n", "answer": "A", "sim_level_std": 0.03},                   # empty question
    {"query": "Q?\nA: x\nC: y\n", "answer": "A", "sim_level_std": 0.03},                 # letters skip B
    {"query": "Q?\nA: x\nB: \n", "answer": "A", "sim_level_std": 0.03},                  # empty option
    {"query": "Q?\nA: x\nB: y\n", "answer": "A"},                                        # no sim_level_std
    {"query": "Q?\nA: x\nB: y\n", "answer": "x", "sim_level_std": 0.03},                 # answer is not a letter
    "not a record",
]


def test_split_query():
    stem, opts = split_query(GOOD[1]["query"])
    assert stem == "Line one of a stem.\nLine two: still the stem"
    assert opts == ["one", "two", "three", "four"]


def test_meddx_good_and_malformed(caplog):
    records = [GOOD[0], MALFORMED[0], GOOD[1], *MALFORMED[1:], GOOD[2]]
    with caplog.at_level(logging.WARNING, logger="qa.datasets"):
        qs, issues = parse_meddx(records)
    assert [q.id for q in qs] == ["meddx-0", "meddx-2", f"meddx-{len(records) - 1}"]
    assert [(q.answer, q.options[q.answer]) for q in qs] == [(2, "gamma"), (0, "one"), (1, "ADH1C")]
    assert qs[0].question == "Which drug treats X?"
    assert [q.meta["difficulty"] for q in qs] == ["basic", "expert", "intermediate"]
    assert [q.split for q in qs[:2]] == ["test", "test"] and qs[2].split in ("train", "validation")
    # every malformed record is reported with its index and reason, none parsed
    assert [i.index for i in issues] == [1, 3, 4, 5, 6, 7, 8, 9]
    reasons = [i.reason for i in issues]
    assert "options" in reasons[0]
    assert "'D' is not among the 3 options" in reasons[1]
    assert reasons[2] == "empty question"
    assert "do not run A, B, C" in reasons[3]
    assert "empty option" in reasons[4]
    assert "sim_level_std" in reasons[5]
    assert "not an option letter" in reasons[6]
    assert "not an object" in reasons[7]
    assert "skipped 8 of 11" in caplog.text and "record 3:" in caplog.text


def test_difficulty_rule_counts_on_fixture():
    # boundaries belong to Intermediate: > 0.04 basic, < 0.02 expert
    stds = [0.5, 0.0401, 0.04, 0.03, 0.02, 0.0199, 0.0, 0.041, 0.025]
    assert [difficulty(s) for s in stds] == ["basic", "basic", "intermediate", "intermediate", "intermediate",
                                             "expert", "expert", "basic", "intermediate"]
    recs = [{"query": f"Q{i}?\nA: a\nB: b\n", "answer": "A", "sim_level_std": s} for i, s in enumerate(stds)]
    qs, _ = parse_meddx(recs, val_fraction=0.5)
    counts = {d: sum(q.meta["difficulty"] == d for q in qs) for d in ("basic", "intermediate", "expert")}
    assert counts == {"basic": 3, "intermediate": 4, "expert": 2}
    # Intermediate goes to train/validation, the others are test
    assert {q.split for q in qs if q.meta["difficulty"] != "intermediate"} == {"test"}
    assert {q.split for q in qs if q.meta["difficulty"] == "intermediate"} <= {"train", "validation"}


def test_meddx_validation_split_is_deterministic_and_order_free(tmp_path):
    recs = [{"query": f"Question number {i}?\nA: a\nB: b\n", "answer": "B", "sim_level_std": 0.03} for i in range(200)]
    qs, _ = parse_meddx(recs, val_fraction=0.25)
    qs_rev, _ = parse_meddx(recs[::-1], val_fraction=0.25)
    by_text = {q.question: q.split for q in qs}
    assert by_text == {q.question: q.split for q in qs_rev}
    n_val = sum(s == "validation" for s in by_text.values())
    assert 30 <= n_val <= 70  # ~50 expected
    assert {q.question: q.split for q in parse_meddx(recs, val_fraction=0.25, seed=1)[0]} != by_text
    path = tmp_path / "meddx.json"
    path.write_text(json.dumps(recs))
    assert len(load_meddx(path, split="validation", val_fraction=0.25)) == n_val
    assert len(load_dataset("meddx", path, split="intermediate")) == 200
    with pytest.raises(ValueError, match="no question has split"):
        load_meddx(path, split="basic")


@pytest.mark.shared_data
def test_meddx_real_counts():
    path = shared_data_path("qa", "MedDDx.json")
    if path is None:
        pytest.skip("../shared/data/qa/MedDDx.json absent (set MEDTOK_SHARED_DATA)")
    qs = load_meddx(path)
    assert len(qs) == 1769  # every published record parses
    counts = {d: sum(q.meta["difficulty"] == d for q in qs) for d in ("basic", "intermediate", "expert")}
    assert counts == {"basic": 245, "intermediate": 1041, "expert": 483}
    assert all(len(q.options) == 4 for q in qs)
    assert len(load_meddx(path, split="test")) == 245 + 483
    n_val = len(load_meddx(path, split="validation"))
    assert 150 < n_val < 270 and n_val + len(load_meddx(path, split="train")) == 1041


# ---- generic files -------------------------------------------------------------
MEDQA = {"question": "A 23-year-old ...?", "options": {"A": "Ampicillin", "B": "Ceftriaxone", "C": "Doxycycline",
                                                        "D": "Nitrofurantoin"}, "answer": "Nitrofurantoin",
         "answer_idx": "D", "meta_info": "step1"}
MEDMCQA = {"id": "m1", "question": "Which vitamin?", "opa": "A", "opb": "B12", "opc": "C", "opd": "D", "cop": 1}


def test_mc_records_formats():
    recs = [MEDQA, MEDMCQA,
            {"question": "Pick", "options": ["x", "y", "z"], "answer": 2, "split": "train", "codes": ["ICD10CM:E11.9"]},
            {"question": "Pick", "choices": {"label": ["A", "B"], "text": ["p", "q"]}, "answerKey": "B"},
            {"question": "Pick", "options": ["x", "y"], "answer": "y"}]
    qs, issues = parse_mc_records(recs, stem="f")
    assert not issues
    assert [q.answer for q in qs] == [3, 1, 2, 1, 1]
    assert qs[0].options[3] == "Nitrofurantoin" and qs[0].meta["meta_info"] == "step1"
    assert qs[1].id == "m1" and qs[1].options == ["A", "B12", "C", "D"]
    assert qs[2].split == "train" and qs[2].codes == ["ICD10CM:E11.9"] and qs[0].id == "f-0"
    # MedMCQA's original files count cop from 1
    assert parse_mc_records([MEDMCQA], index_base=1)[0][0].answer == 0


def test_mc_records_malformed():
    recs = [{"question": "Q", "answer": "A"},                                   # missing options
            {"question": "Q", "options": ["x", "y"], "answer": "C"},            # answer not among options
            {"question": "  ", "options": ["x", "y"], "answer": "A"},           # empty question
            {"question": "Q", "options": ["x", ""], "answer": "A"},             # empty option
            {"question": "Q", "options": ["x", "y"]},                           # no answer
            {"question": "Q", "options": ["x", "y"], "answer": "zebra"},        # text not among options
            {"question": "Q", "options": ["x", "y"], "answer": 5},              # index out of range
            {"question": "Q", "options": ["only"], "answer": 0},                # one option
            {"question": "Q", "options": ["x", "y"], "answer": "B"}]            # good
    qs, issues = parse_mc_records(recs)
    assert [i.index for i in issues] == list(range(8)) and len(qs) == 1 and qs[0].answer == 1
    assert [i.reason.split()[0] for i in issues] == ["missing", "answer", "empty", "empty", "missing", "answer",
                                                     "answer", "needs"]


def test_mc_file_json_jsonl_csv_agree(tmp_path):
    rows = [{"question": f"Q{i}", "A": "x", "B": "y", "C": "z", "answer": "ABC"[i % 3]} for i in range(6)]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    (tmp_path / "s.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "s.csv").write_text("question,A,B,C,answer\n" + "\n".join(
        f"{r['question']},x,y,z,{r['answer']}" for r in rows))
    got = [[(q.question, q.options, q.answer) for q in load_mc_file(tmp_path / f"s.{ext}")]
           for ext in ("json", "jsonl", "csv")]
    assert got[0] == got[1] == got[2]
    assert [a for _, _, a in got[0]] == [0, 1, 2, 0, 1, 2]
    assert len(load_dataset("csv", tmp_path / "s.csv")) == 6
    with pytest.raises(ValueError, match="needs path"):
        load_dataset("mc_file")


def test_resolve_answer_forms():
    opts = ["x", "y", "z"]
    assert [resolve_answer(a, opts) for a in ("C", "(b)", "A.", 2, "1", "Z")] == [2, 1, 0, 2, 1, 2]
    assert resolve_answer(3, opts, index_base=1) == 2
    for bad in (None, True, 3, "D", 1.5):
        with pytest.raises(MalformedRecord):
            resolve_answer(bad, opts)


# ---- files users bring: bad lines, layouts, encodings ---------------------------------------
def _q(i, answer="B"):
    return {"question": f"Q{i}?", "options": ["x", "y"], "answer": answer}


def test_jsonl_line_that_is_not_json_is_reported_with_its_line_and_skipped(tmp_path, caplog):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(_q(0)) + "\n\n" + '{"question": "broken", "options": ["x",\n' + json.dumps(_q(1)) + "\n")
    with caplog.at_level(logging.WARNING, logger="qa.datasets"):
        qs = load_dataset("jsonl", path)
    assert [q.question for q in qs] == ["Q0?", "Q1?"]  # the good records are kept
    assert [q.id for q in qs] == ["q-0", "q-2"]  # numbering does not shift past the bad line
    assert "skipped 1 of 3" in caplog.text and "record 1 (line 3): not valid JSON" in caplog.text
    _, issues = parse_mc_bytes(path.read_bytes(), "jsonl")
    assert [(i.index, i.line) for i in issues] == [(1, 3)]


def test_json_object_mapping_ids_to_records_keeps_the_ids(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"0001": _q(0, "A"), "0002": {**_q(1), "id": "own"}, "0003": "not a record"}))
    qs, issues = parse_mc_bytes(path.read_bytes(), "json")
    assert [(q.id, q.answer) for q in qs] == [("0001", 0), ("0002", 1)]
    assert qs[1].meta["source_id"] == "own"  # the record's own id is kept too
    assert [(i.index, i.reason) for i in issues] == [(2, "entry '0003' is str, not a record")]
    assert [q.id for q in load_mc_file(path)] == ["0001", "0002"]
    # the other layouts still work: a list, {"data": [...]}, a single record
    for doc in ([_q(0)], {"version": 1, "data": [_q(0)]}, _q(0)):
        path.write_text(json.dumps(doc))
        assert [q.question for q in load_mc_file(path)] == ["Q0?"]


def test_unreadable_json_file_raises_dataset_file_error_with_position(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([_q(0), _q(1)], indent=1)[:-20])
    with pytest.raises(DatasetFileError, match=r"not valid JSON: .*\(line \d+, column \d+\)"):
        load_mc_file(path)
    path.write_text(json.dumps({"train": [_q(0)], "test": [_q(1)]}))
    with pytest.raises(DatasetFileError, match="exactly one list"):
        load_mc_file(path)
    # a .json file holding JSON lines (as MedQA ships) is read line by line
    path.write_text(json.dumps(_q(0)) + "\n" + json.dumps(_q(1)) + "\n")
    assert len(load_mc_file(path)) == 2


def test_csv_unterminated_quote_costs_one_row(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('question,A,B,answer\nQ0?,x,y,B\n"Q1 never closes,x,y,A\nQ2?,x,y,A\n"Q3\nspans lines",x,y,B\n'
                    'Q4?,x,y,B,extra\n')
    qs, issues = parse_mc_bytes(path.read_bytes(), "csv", stem="q")
    assert [(q.question, q.answer) for q in qs] == [("Q0?", 1), ("Q2?", 0), ("Q3\nspans lines", 1)]
    assert [(i.index, i.line) for i in issues] == [(1, 3), (4, 7)]
    assert "unterminated or stray quote" in issues[0].reason and "5 fields, the header has 4" in issues[1].reason


def test_bytes_that_are_not_utf8_reject_only_their_record(tmp_path):
    good = [json.dumps(_q(i)).encode() for i in range(3)]
    bad = json.dumps({"question": "caf\u00e9", "options": ["x", "y"], "answer": "A"}, ensure_ascii=False).encode().replace(
        "\u00e9".encode(), b"\xe9")  # Latin-1 byte in a UTF-8 file
    qs, issues = parse_mc_bytes(b"\n".join([good[0], bad, good[1], good[2]]), "jsonl")
    assert [q.question for q in qs] == ["Q0?", "Q1?", "Q2?"]
    assert issues[0].index == 1 and "not valid UTF-8" in issues[0].reason
    # UTF-8 with a BOM and UTF-16 (Excel's "Unicode text") read as text
    rows = [_q(0), _q(1)]
    for data in (b"\xef\xbb\xbf" + json.dumps(rows).encode(), json.dumps(rows).encode("utf-16")):
        assert len(parse_mc_bytes(data, "json")[0]) == 2


def test_wrong_types_and_huge_values_are_malformed_records():
    recs = [{"question": {"text": "Q"}, "options": ["x", "y"], "answer": "A"},   # question is an object
            {"question": "Q", "options": [["x"], "y"], "answer": "A"},           # option is a list
            {"question": "Q", "options": ["x", "y"], "answer": 10 ** 5000},      # index too long to print
            {"question": "Q", "options": ["x", "y"], "answer": "1" * 5000},      # digit string over the int limit
            {"question": "Q", "options": ["x", "y"], "answer": "A", "codes": 7},  # codes not a list
            {"question": "Q", "options": ["x", "y"], "answer": float("inf")},
            {"question": "Q", "options": ["x", "y"], "answer": "\u00b2"}]        # a digit that is not decimal
    qs, issues = parse_mc_records(recs)
    assert not qs and [i.index for i in issues] == list(range(len(recs)))
    assert all(len(i.reason) < 200 for i in issues)
    assert "too long to print" in issues[2].reason and "too many digits" in issues[3].reason


def test_meddx_bad_lines_values_and_id_mapping(tmp_path):
    good = GOOD[0]
    text = "\n".join([json.dumps(good), "{broken", json.dumps({**good, "sim_level_std": 10 ** 400}),
                      json.dumps({**good, "sim_level_std": -0.5}), json.dumps({**good, "sim_level_std": True}),
                      json.dumps(GOOD[1])])
    qs, issues = parse_meddx_bytes(text.encode())
    assert [q.id for q in qs] == ["meddx-0", "meddx-5"]
    assert [(i.index, i.line) for i in issues] == [(1, 2), (2, 3), (3, 4), (4, 5)]
    assert "not valid JSON" in issues[0].reason and "sim_level_std" in issues[1].reason
    assert qs[0].meta["query"] == good["query"]  # the published text, for tools that read it whole
    path = tmp_path / "ddx.json"
    path.write_text(json.dumps({"ddx-a": GOOD[0], "ddx-b": GOOD[1]}))
    assert [q.id for q in load_meddx(path)] == ["ddx-a", "ddx-b"]


def test_stable_fraction_is_the_base_layer_helper_with_the_same_assignment():
    import hashlib

    from medbase import hashing
    from qa.datasets import common

    assert common.stable_fraction is hashing.stable_fraction  # one helper, re-exported
    for key, salt in [("Which drug treats X?", "meddx-0"), ("ICD10CM:E11.9", "ontology-split-0")]:
        digest = hashlib.blake2b(f"{salt}\x00{key}".encode(), digest_size=8).digest()
        assert common.stable_fraction(key, salt) == int.from_bytes(digest, "big") / 2.0 ** 64
