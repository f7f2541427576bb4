"""The vocabulary-derived QA set: no code leakage across splits, determinism, distractor rules."""

import pytest

from medtok.toy import toy_vocabulary
from qa.datasets import load_dataset
from qa.datasets.ontology import (OntologyQAConfig, build_ontology_qa, code_split, norm_text, question_code_ids,
                                  split_code_ids, training_texts)

SIZES = {"train": 1000, "validation": 1000, "test": 1000}  # more than exist: every leaf is used


@pytest.fixture(scope="module")
def vocab():
    return toy_vocabulary()[0]


_PARENT = {}


def _parent(vocab, cid):
    if not _PARENT:
        _PARENT.update({c: (ps[0] if len(ps) else None) for c, ps in zip(vocab.codes["code_id"], vocab.codes["parents"])})
    return _PARENT[cid]


def _root(vocab, cid):
    while _parent(vocab, cid) is not None:
        cid = _parent(vocab, cid)
    return cid


def test_no_code_leaks_between_splits(vocab):
    # text_guard off: every leaf is asked once (the guard is tested below)
    qs = build_ontology_qa(vocab, sizes=SIZES, systems=("ICD10CM", "ICD9CM"), difficulty="mixed", text_guard="off")
    leaves = set(vocab.codes.loc[vocab.codes["kind"] == "code", "code_id"])
    leaves -= set(vocab.codes["parents"].explode().dropna())
    assert {q.codes[0] for q in qs} == leaves  # 384 leaves, each asked exactly once
    assert len(qs) == len(leaves) == 384
    codes_in = {s: set() for s in ("train", "validation", "test")}
    for q in qs:
        assert q.codes == [q.meta["option_codes"][q.answer]]
        assert q.split == code_split(q.codes[0])
        codes_in[q.split].update(q.meta["option_codes"])  # answers and distractors
    assert not codes_in["train"] & codes_in["test"]
    assert not codes_in["train"] & codes_in["validation"]
    assert not codes_in["validation"] & codes_in["test"]
    n = {s: sum(q.split == s for q in qs) for s in codes_in}
    assert n["train"] > n["validation"] > 0 and n["test"] > 0


def test_question_shows_code_not_text(vocab):
    q = build_ontology_qa(vocab, sizes={"test": 1})[0]
    cid = q.codes[0]
    assert q.question == f"What does the ICD-10-CM code {cid} denote?"
    assert q.options[q.answer] == vocab.description(cid)
    assert vocab.description(cid) not in q.question
    assert len(q.options) == 4 and len(set(q.options)) == 4


def test_deterministic_nested_and_seeded(vocab):
    a = build_ontology_qa(vocab, sizes={"train": 50, "test": 20})
    b = build_ontology_qa(vocab, sizes={"train": 50, "test": 20})
    assert [(q.id, q.options, q.answer) for q in a] == [(q.id, q.options, q.answer) for q in b]
    # a smaller set is a prefix of a larger one, question for question
    small = build_ontology_qa(vocab, sizes={"train": 20})
    assert [(q.id, q.options) for q in small] == [(q.id, q.options) for q in a[:20]]
    # the seed changes the sample and the options, never the split of a code
    c = build_ontology_qa(vocab, sizes={"train": 50, "test": 20}, seed=1)
    assert [q.id for q in c] != [q.id for q in a]
    assert all(q.split == code_split(q.codes[0]) for q in c)
    # answer positions are spread over the letters
    full = build_ontology_qa(vocab, sizes=SIZES)
    assert {q.answer for q in full} == {0, 1, 2, 3}


def test_hard_distractors_nearest_first(vocab):
    qs = build_ontology_qa(vocab, sizes=SIZES, difficulty="hard")
    split_of = {q.codes[0]: q.split for q in qs}
    for q in qs:
        cid, distractors = q.codes[0], [c for c in q.meta["option_codes"] if c != q.codes[0]]
        same_split_siblings = [c for c, s in split_of.items() if s == q.split and c != cid
                               and _parent(vocab, c) == _parent(vocab, cid)]
        chapter_mates = [c for c, s in split_of.items() if s == q.split and c != cid and _root(vocab, c) == _root(vocab, cid)]
        # as many siblings (same category) as the split has, then the same chapter, then anywhere
        assert sum(_parent(vocab, d) == _parent(vocab, cid) for d in distractors) == min(3, len(same_split_siblings))
        assert sum(_root(vocab, d) == _root(vocab, cid) for d in distractors) == min(3, len(chapter_mates))


def test_easy_distractors_from_other_chapters(vocab):
    qs = build_ontology_qa(vocab, sizes=SIZES, difficulty="easy", systems=("ICD10CM", "ICD9CM"))
    for q in qs:
        cid = q.codes[0]
        for d in q.meta["option_codes"]:
            if d != cid:
                assert _root(vocab, d) != _root(vocab, cid)
                assert d.split(":")[0] == cid.split(":")[0]  # same system


def test_text_guard_drops_held_out_answers_a_training_code_carries(vocab):
    # toy ICD-9 descriptions are the ICD-10 ones lower-cased: the same text after normalisation
    both = ("ICD10CM", "ICD9CM")
    off = build_ontology_qa(vocab, sizes=SIZES, systems=both, text_guard="off")
    on = build_ontology_qa(vocab, sizes=SIZES, systems=both, text_guard="systems")
    train_texts = {norm_text(d) for c, d in zip(vocab.codes["code_id"], vocab.codes["description"])
                   if code_split(c) == "train" and c.split(":")[0] in both}
    assert training_texts(vocab, systems=both) == train_texts
    dropped = {q.id for q in off} - {q.id for q in on}
    expected = {q.id for q in off if q.split != "train" and norm_text(q.options[q.answer]) in train_texts}
    assert dropped == expected and len(dropped) > 20  # each held-out leaf whose twin is a training code
    assert [q.id for q in on if q.split == "train"] == [q.id for q in off if q.split == "train"]
    # ICD-10-CM alone: no ICD-10 leaf shares its text with another ICD-10 code in the toy
    assert len(build_ontology_qa(vocab, sizes=SIZES)) == len(build_ontology_qa(vocab, sizes=SIZES, text_guard="off"))
    # "all" also guards against the other systems' codes
    all_ = build_ontology_qa(vocab, sizes=SIZES, text_guard="all")
    assert all(norm_text(q.options[q.answer]) not in training_texts(vocab) for q in all_ if q.split != "train")
    assert len(all_) < len(build_ontology_qa(vocab, sizes=SIZES))


def test_exclude_codes_and_held_out_code_lists(vocab):
    qs = build_ontology_qa(vocab, sizes=SIZES)
    test_codes = split_code_ids(vocab, split="test")
    assert test_codes == sorted({q.codes[0] for q in qs if q.split == "test"})  # every test leaf is asked
    assert set(question_code_ids(qs)) == {c for q in qs if q.split == "test" for c in q.meta["option_codes"]}
    assert set(question_code_ids(qs, options=False)) == set(test_codes)
    # hold out some training and validation codes: gone from train/validation questions, test unchanged
    ex = [q.codes[0] for q in qs if q.split != "test"][::3]
    held = build_ontology_qa(vocab, sizes=SIZES, exclude_codes=ex)
    used = {c for q in held if q.split != "test" for c in q.meta["option_codes"]}
    assert not used & set(ex)
    assert [q.id for q in held if q.split == "test"] == [q.id for q in qs if q.split == "test"]
    assert OntologyQAConfig.from_dict(OntologyQAConfig(exclude_codes=ex).to_dict()).exclude_codes == tuple(ex)


def test_config_validation_and_registry(vocab):
    with pytest.raises(ValueError):
        OntologyQAConfig(difficulty="medium")
    with pytest.raises(ValueError):
        OntologyQAConfig(split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        OntologyQAConfig(sizes={"dev": 3})
    with pytest.raises(ValueError):
        OntologyQAConfig(text_guard="yes")
    with pytest.raises(ValueError, match="no candidate codes"):
        build_ontology_qa(vocab, systems=("ATC",))
    qs = load_dataset("ontology", vocab=vocab, split="test", n_options=5)
    assert qs and all(q.split == "test" and len(q.options) == 5 for q in qs)


def test_real_vocabulary_sizes_and_leakage():
    from medbase.paths import default_vocab_dir

    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip(f"built vocabulary absent at {default_vocab_dir()} (run scripts/build_vocab.py)")
    from medtok.codes.vocabulary import Vocabulary

    qs = build_ontology_qa(Vocabulary.load(default_vocab_dir()))  # default: 2000 / 300 / 300 ICD-10-CM leaves
    n = {s: sum(q.split == s for q in qs) for s in ("train", "validation", "test")}
    assert n == {"train": 2000, "validation": 300, "test": 300}
    train = {c for q in qs if q.split == "train" for c in q.meta["option_codes"]}
    held_out = {c for q in qs if q.split != "train" for c in q.meta["option_codes"]}
    assert not train & held_out
    assert all(q.codes[0].startswith("ICD10CM:") and len(set(q.options)) == 4 for q in qs)
