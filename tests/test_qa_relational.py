"""Relational question types: determinism, split by code and by answer group, no leak of a
held-out code or answer text into any training question or caption, edge removal, KG type."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medtok.codes.vocabulary import Vocabulary
from medtok.graph.graph import CodeGraph
from medtok.toy import LESIONS, SITES, toy_vocabulary
from qa.datasets.ontology import build_ontology_qa, code_split, norm_text, training_texts
from qa.datasets.relational.questions import TYPES, RelationalQAConfig, build_relational_qa, title_similarity
from qa.datasets.relational.checks import (find_leaks, graph_without_relied_edges, relied_edge_mask,
                                           split_vocabulary_codes, training_footprint)

BIG = {"train": 10_000, "validation": 10_000, "test": 10_000}  # more than exist: every possible question
# the toy has 192 ICD-10 leaves; a question needs its code and its answer in the same split, so
# larger held-out shares than the default 70/15/15 give every split enough questions to check
FR = (0.4, 0.2, 0.4)


def split(code):
    return code_split(code, FR)


def _toy_with_ccs():
    """The toy vocabulary plus CCS groups: one per (lesion, site), shared by the 8 organs' codes,
    under one multi-level group per lesion (answers shared by many codes, as in real CCS); and
    a second GEM partner per ICD-10 leaf with an unrelated title ("Follow-up examination ...",
    shared by the 8 organs, like ICD-9 V58.89 "Other specified aftercare")."""
    v, g = toy_vocabulary()
    rows, edges = [], []
    rows.append(dict(code_id="ICD9CM:V50-V59", system="ICD9CM", code="V50-V59", description="Supplementary follow-up",
                     parents=[], synonyms=[], kind="group"))
    for li, lesion in enumerate(LESIONS):
        rows.append(dict(code_id=f"ICD9CM:V5{li}", system="ICD9CM", code=f"V5{li}", description=f"Follow-up series {li}",
                         parents=["ICD9CM:V50-V59"], synonyms=[], kind="group"))
        edges.append((f"ICD9CM:V5{li}", "ICD9CM:V50-V59", "is_a"))
        for si, site in enumerate(SITES):
            rows.append(dict(code_id=f"ICD9CM:V5{li}.{si}", system="ICD9CM", code=f"V5{li}.{si}",
                             description=f"Follow-up examination type {li}{si}", parents=[f"ICD9CM:V5{li}"],
                             synonyms=[], kind="code"))
            edges.append((f"ICD9CM:V5{li}.{si}", f"ICD9CM:V5{li}", "is_a"))
            for o in range(8):
                edges.append((f"ICD10CM:{chr(65 + o)}{li:02d}.{si}", f"ICD9CM:V5{li}.{si}", "gem_icd10_icd9"))
    for li, lesion in enumerate(LESIONS):
        rows.append(dict(code_id=f"CCS:ML{li}", system="CCS", code=f"ML{li}", description=f"{lesion.capitalize()} disorders",
                         parents=[], synonyms=[], kind="group"))
        for si, site in enumerate(SITES):
            n = 10 * li + si
            rows.append(dict(code_id=f"CCS:{n}", system="CCS", code=str(n), description=f"{site.capitalize()} {lesion} group",
                             parents=[f"CCS:ML{li}"], synonyms=[], kind="group"))
            edges.append((f"CCS:{n}", f"CCS:ML{li}", "is_a"))
            for o in range(8):
                edges.append((f"ICD10CM:{chr(65 + o)}{li:02d}.{si}", f"CCS:{n}", "in_group"))
    codes = pd.concat([v.codes, pd.DataFrame(rows)], ignore_index=True)
    vocab = Vocabulary(codes)
    idx = vocab._index
    new = pd.DataFrame({"src": [idx[a] for a, _, _ in edges], "dst": [idx[b] for _, b, _ in edges],
                        "type": [t for _, _, t in edges]})
    return vocab, CodeGraph.from_frame(len(codes), pd.concat([g.to_frame(), new], ignore_index=True))


def _kg_fixture(root):
    """MONDO + Hetionet files in the shared layout: each organ's 'infection' category maps to a
    disease treated by 5 of 40 compounds, presenting 5 of 40 symptoms, localizing to 5 of 40
    anatomy nodes and associated with 5 of 40 genes (node k goes with disease k % 8)."""
    (root / "mondo").mkdir(parents=True)
    (root / "hetionet").mkdir()
    organs = ["heart", "lung", "kidney", "liver", "brain", "skin", "bone", "eye"]
    sssom = pd.DataFrame({"subject_id": [f"MONDO:{o}" for o in range(8)],
                          "subject_label": [f"{organ} infection" for organ in organs],
                          "predicate_id": "skos:exactMatch", "object_id": [f"ICD10CM:{chr(65 + o)}00" for o in range(8)],
                          "object_label": "x", "mapping_justification": "semapv:ManualMappingCuration"})
    sssom.to_csv(root / "mondo" / "mondo_exactmatch_icd10cm.sssom.tsv", sep="\t", index=False)
    nodes = [(f"Disease::D{o}", f"{organ} infection", "Disease") for o, organ in enumerate(organs)]
    nodes += [(f"Compound::C{c}", f"Drugamab {c}", "Compound") for c in range(40)]
    others = {"DpS": ("Symptom", "S", "Achy feeling"), "DlA": ("Anatomy", "A", "Body part"), "DaG": ("Gene", "G", "GENE")}
    for kind, letter, name in others.values():
        nodes += [(f"{kind}::{letter}{k}", f"{name} {k}", kind) for k in range(40)]
    pd.DataFrame(nodes, columns=["id", "name", "kind"]).to_csv(root / "hetionet" / "nodes.tsv", sep="\t", index=False)
    sif = [(f"Compound::C{c}", "CtD", f"Disease::D{c % 8}") for c in range(40)]
    sif += [(f"Disease::D{k % 8}", me, f"{kind}::{letter}{k}") for me, (kind, letter, _) in others.items() for k in range(40)]
    pd.DataFrame(sif, columns=["source", "metaedge", "target"]).to_csv(root / "hetionet" / "edges.sif", sep="\t", index=False)
    return root


@pytest.fixture(scope="module")
def toy():
    return _toy_with_ccs()


@pytest.fixture(scope="module")
def kg_dir(tmp_path_factory):
    return _kg_fixture(tmp_path_factory.mktemp("kg"))


@pytest.fixture(scope="module")
def questions(toy, kg_dir):
    v, g = toy
    return build_relational_qa(v, g, sizes=BIG, kg_dir=str(kg_dir), max_per_answer=0, split_fractions=FR)


def _by_type(qs):
    out = {}
    for q in qs:
        out.setdefault(q.meta["qtype"], []).append(q)
    return out


def test_every_type_generated_with_right_answers(toy, questions):
    v, g = toy
    by = _by_type(questions)
    assert set(by) == set(TYPES)
    parent = {c: (ps[0] if len(ps) else None) for c, ps in zip(v.codes["code_id"], v.codes["parents"])}
    f = g.to_frame()
    ids = v.codes["code_id"].to_numpy()
    pairs = {(ids[s], ids[d], t) for s, d, t in zip(f["src"], f["dst"], f["type"])}
    for q in questions:
        cid, ans = q.codes[0], q.meta["answer_group"]
        assert len(q.options) == 4 and len({norm_text(o) for o in q.options}) == 4
        assert q.meta["option_codes"][q.answer] == ans and cid in q.question and q.question.endswith("?")
        assert v.description(cid) not in q.question
        right = {
            "gem_icd9": lambda c, a: (c, a, "gem_icd10_icd9") in pairs or (a, c, "gem_icd9_icd10") in pairs,
            "ccs": lambda c, a: (c, a, "in_group") in pairs,
            "parent_title": lambda c, a: parent[c] == a,
            "sibling": lambda c, a: parent[c] == parent[a] and c != a,
            "hetionet_treats": lambda c, a: int(a.split("::")[1][1:]) % 8 == ord(cid.split(":")[1][0]) - 65
                                            and cid.split(":")[1][1:3] == "00" and "::C" in a,
        }
        for t, letter in (("hetionet_symptom", "S"), ("hetionet_anatomy", "A"), ("hetionet_gene", "G")):
            right[t] = lambda c, a, letter=letter: (right["hetionet_treats"](c, a.replace(f"::{letter}", "::C"))
                                                    and f"::{letter}" in a)
        right["gem_icd9_distinct"] = right["gem_icd9"]
        check = right[q.meta["qtype"]]
        assert check(cid, ans), q
        # no distractor is also a right answer
        assert not any(check(cid, o) for i, o in enumerate(q.meta["option_codes"]) if i != q.answer), q
        if not q.meta["qtype"].startswith("hetionet_"):
            assert q.options[q.answer] == v.description(ans)
    # the distinct GEM type keeps only partners whose titles share few words
    assert all(q.meta["similarity"] <= 0.2 for q in by.get("gem_icd9_distinct", []))
    assert title_similarity("Infection of left heart", "left heart infection") == 1.0
    assert {q.answer for q in questions} == {0, 1, 2, 3}


def test_split_by_code_and_by_answer_group(questions):
    for q in questions:
        assert q.split == split(q.codes[0]) == split(q.meta["answer_group"])
        # distractors come from the same split's answers
        assert all(split(c) == q.split for c in q.meta["option_codes"])
    for qtype, qs in _by_type(questions).items():
        codes = {s: {q.codes[0] for q in qs if q.split == s} for s in ("train", "validation", "test")}
        answers = {s: {q.meta["answer_group"] for q in qs if q.split == s} for s in codes}
        options = {s: {c for q in qs if q.split == s for c in q.meta["option_codes"]} for s in codes}
        assert codes["train"] and codes["test"], qtype
        for held in ("validation", "test"):
            assert not codes["train"] & codes[held]
            assert not answers["train"] & answers[held] and not options["train"] & options[held]
    # a shared answer (a CCS group of 8 codes) is asked more than once within its split
    ccs = [q.meta["answer_group"] for q in _by_type(questions)["ccs"]]
    assert max(ccs.count(a) for a in set(ccs)) > 1


def test_deterministic_nested_and_capped(toy, kg_dir, questions):
    v, g = toy
    again = build_relational_qa(v, g, sizes=BIG, kg_dir=str(kg_dir), max_per_answer=0, split_fractions=FR)
    assert [(q.id, q.options, q.answer) for q in again] == [(q.id, q.options, q.answer) for q in questions]
    small = build_relational_qa(v, g, sizes={"train": 5, "test": 2}, kg_dir=str(kg_dir), max_per_answer=0,
                                split_fractions=FR)
    for qtype, qs in _by_type(small).items():
        full = _by_type(questions)[qtype]
        for s in ("train", "test"):
            got = [(q.id, q.options) for q in qs if q.split == s]
            assert got == [(q.id, q.options) for q in full if q.split == s][:len(got)] and got
    capped = build_relational_qa(v, g, sizes=BIG, kg_dir="", types=("ccs",), max_per_answer=2, split_fractions=FR)
    for s in ("train", "test"):
        groups = [q.meta["answer_group"] for q in capped if q.split == s]
        assert groups and max(groups.count(a) for a in groups) <= 2
    seeded = build_relational_qa(v, g, sizes=BIG, kg_dir="", types=("sibling",), seed=1, split_fractions=FR)
    assert [q.id for q in seeded] != [q.id for q in _by_type(questions)["sibling"]]
    assert all(q.split == split(q.codes[0]) for q in seeded)


def test_no_held_out_code_or_answer_text_in_training(toy, questions):
    """Every training question (relational + ontology) and every alignment caption is checked
    against every held-out question of both sets, for every type."""
    from llm_adapter.data import alignment_codes

    v, g = toy
    onto = build_ontology_qa(v, sizes=BIG, text_guard="all", split_fractions=FR)
    cfg = SimpleNamespace(dataset="ontology", ontology={"systems": ("ICD10CM",), "split_fractions": FR}, seed=0,
                          align_codes=10_000)
    held_codes = {c for q in questions + onto if q.split != "train" for c in q.codes}
    captions = alignment_codes(v, cfg, held_codes)
    assert captions
    fp = training_footprint(questions + onto, vocab=v, caption_codes=captions)
    assert find_leaks(questions + onto, fp) == []
    # the check can fail: a test question put into training is found
    test_q = next(q for q in questions if q.split == "test")
    assert find_leaks([test_q], training_footprint([test_q], splits=("test",)))
    # a strictly-unseen MedTok leaving out every held-out vocabulary code covers both sets' held-out codes
    unseen = set(split_vocabulary_codes(v, "test", FR)) | set(split_vocabulary_codes(v, "validation", FR))
    held_vocab = {c for q in questions + onto if q.split != "train" for c in q.codes + q.meta["option_codes"]
                  if c in v}
    assert held_vocab <= unseen and not unseen & set(captions)
    # held-out answers are not the text of any training-split code (what captions and the text baseline show)
    tt = training_texts(v, FR)
    assert all(norm_text(q.options[q.answer]) not in tt for q in questions if q.split != "train")


def test_exclude_codes_keeps_them_out_of_training(toy):
    v, g = toy
    base = build_relational_qa(v, g, sizes=BIG, kg_dir="", types=("gem_icd9", "sibling"), split_fractions=FR)
    ex = sorted({q.codes[0] for q in base if q.split == "train"})[::2]
    ex += sorted({q.meta["answer_group"] for q in base if q.split == "validation"})[:3]
    held = build_relational_qa(v, g, sizes=BIG, kg_dir="", types=("gem_icd9", "sibling"), exclude_codes=ex,
                               split_fractions=FR)
    used = {c for q in held if q.split != "test" for c in q.codes + q.meta["option_codes"]}
    assert not used & set(ex)
    assert [q.id for q in held if q.split == "test"] == [q.id for q in base if q.split == "test"]


def test_relied_edges_removed(toy, questions):
    v, g = toy
    counts = g.edge_counts()
    for qtype, removed in [("gem_icd9", counts["gem_icd10_icd9"] + counts["gem_icd9_icd10"]),
                           ("ccs", counts["in_group"]), ("parent_title", 8 * 6 + 8 * 6 * 4)]:
        g2 = graph_without_relied_edges(v, g, qtype)
        assert g.num_edges - g2.num_edges == removed, qtype
    g2 = graph_without_relied_edges(v, g, ["gem_icd9", "sibling"])
    assert "gem_icd10_icd9" not in g2.edge_counts()
    left = g2.to_frame()
    sys_ = v.codes["system"].to_numpy()
    assert not ((left["type"] == "is_a") & (sys_[left["src"]] == "ICD10CM")).any()
    assert ((left["type"] == "is_a") & (sys_[left["src"]] == "ICD9CM")).sum() == 8 * 6 + 8 * 6 * 4 + 6 + 24
    # only the edges of some codes (e.g. the test codes)
    test_codes = sorted({q.codes[0] for q in questions if q.split == "test" and q.meta["qtype"] == "gem_icd9"})
    m = relied_edge_mask(v, g, "gem_icd9", touching=test_codes)
    # per code: its ICD-9 twin (both directions) and its follow-up code (one direction)
    assert m.sum() == 3 * len(test_codes) and set(g.src[m]) | set(g.dst[m]) >= {v._index[c] for c in test_codes}
    # questions record what they rely on
    assert {e for q in questions if q.meta["qtype"] == "ccs" for e in q.meta["edge_types"]} == {"in_group"}


def test_kg_type_skips_cleanly_without_files(toy, tmp_path, caplog):
    v, g = toy
    qs = build_relational_qa(v, g, sizes=BIG, kg_dir=str(tmp_path), types=("hetionet_treats", "parent_title"))
    assert {q.meta["qtype"] for q in qs} == {"parent_title"}
    assert "hetionet_treats skipped" in caplog.text


def test_config_validation(toy):
    with pytest.raises(ValueError):
        RelationalQAConfig(types=("nope",))
    with pytest.raises(ValueError):
        RelationalQAConfig(difficulty="mixed")
    with pytest.raises(ValueError):
        RelationalQAConfig(max_per_answer={"ccs": -1})
    cfg = RelationalQAConfig(max_per_answer=3)
    assert cfg.max_per_answer == {"default": 3}
    assert RelationalQAConfig.from_dict(cfg.to_dict()) == cfg
    v, g = toy
    easy = build_relational_qa(v, g, sizes=BIG, kg_dir="", types=("gem_icd9",), difficulty="easy", split_fractions=FR)
    assert easy
    roots = {c: c for c in v.codes["code_id"]}
    parent = {c: (ps[0] if len(ps) else None) for c, ps in zip(v.codes["code_id"], v.codes["parents"])}
    for c in roots:
        while parent[roots[c]] is not None:
            roots[c] = parent[roots[c]]
    for q in easy:
        a = q.meta["answer_group"]
        assert all(roots[o] != roots[a] for o in q.meta["option_codes"] if o != a)


def test_real_vocabulary_types_and_leaks():
    from medbase.paths import default_vocab_dir

    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip(f"built vocabulary absent at {default_vocab_dir()} (run scripts/build_vocab.py)")
    from medtok.loading import load_vocabulary

    v, g = load_vocabulary()
    qs = build_relational_qa(v, g, sizes={"train": 200, "validation": 20, "test": 50}, kg_dir="",
                             types=("gem_icd9", "gem_icd9_distinct", "ccs", "parent_title", "sibling"))
    n = {(q.meta["qtype"], q.split) for q in qs}
    assert len(n) == 15 and len(qs) == 5 * 270
    assert find_leaks(qs, training_footprint(qs)) == []
    assert all(q.codes[0].startswith("ICD10CM:") and len(set(q.options)) == 4 for q in qs)
    assert np.mean([q.meta["similarity"] for q in qs if q.meta["qtype"] == "gem_icd9_distinct"]) < 0.2


def test_text_oracles_by_hand(toy):
    from qa.datasets.relational.tables import relational_report, text_oracles
    from qa.types import MCQuestion

    q = MCQuestion("q", "Which?", ["Cyst of lung", "Infection of left heart", "Tumor of bone", "Injury of eye"], answer=1)
    tie = MCQuestion("t", "Which?", ["alpha", "beta", "gamma", "delta"], answer=2)  # no overlap anywhere: 1/4 credit
    r = text_oracles([q, tie], ["Infection of left heart muscle", "zeta"])
    assert r["words"] == pytest.approx((1 + 0.25) / 2) and r["tfidf"] == pytest.approx((1 + 0.25) / 2)
    v, g = toy
    rep = relational_report(v, g, RelationalQAConfig(types=("parent_title", "gem_icd9"), split_fractions=FR, kg_dir=""))
    pt = rep["types"]["parent_title"]
    # toy leaves read "<Lesion> of <site> <organ>", parents "<Lesion> of <organ>": never a prefix, always overlapping
    assert pt["answer_prefix_of_description"] == 0.0 and pt["oracle"]["words"] > 0.5
    assert pt["counts"]["test"] == rep["types"]["parent_title"]["eval_n"] > 0
    assert pt["edges_removed"] == 8 * 6 + 8 * 6 * 4 and pt["skipped"]["test"]["made"] == pt["counts"]["test"]


def test_load_relational_entry(toy):
    from qa.datasets.relational.questions import load_relational

    v, g = toy
    qs = load_relational(vocab=v, graph=g, split="test", types=("sibling",), split_fractions=FR, kg_dir="")
    assert qs and all(q.split == "test" and q.meta["qtype"] == "sibling" for q in qs)


def test_kg_types_record_how_far_the_answer_is(toy, questions):
    """Every KG question's answer sits behind the is_a steps up to the mapped category (ICD-10
    'X00'), then code -> MONDO -> Hetionet node: 2 more edges."""
    v, _ = toy
    parent = {c: (ps[0] if len(ps) else None) for c, ps in zip(v.codes["code_id"], v.codes["parents"])}
    kg = [q for q in questions if q.meta["qtype"].startswith("hetionet_")]
    assert {q.meta["qtype"] for q in kg} == {"hetionet_treats", "hetionet_symptom", "hetionet_anatomy", "hetionet_gene"}
    for q in kg:
        steps, c = 0, q.codes[0]
        while not c.endswith("00"):
            c, steps = parent[c], steps + 1
        assert q.meta["answer_hops"] == steps + 2, q
    assert {q.meta["answer_hops"] for q in kg} == {2, 3}  # mapped categories and the leaves under them
    assert all("answer_hops" not in q.meta for q in questions if not q.meta["qtype"].startswith("hetionet_"))
