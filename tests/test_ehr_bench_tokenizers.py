"""EHR benchmark code tokenizers: hierarchy levels of ICD-9 / ICD-10 codes, and every tokenizer
on codes it never saw in training (and on codes outside its code systems)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from ehr.benchmark.hierarchy import Hierarchy
from ehr.benchmark.prepare import build_resources
from tests.ehr_bench_fixtures import fixture_vectors
from ehr.benchmark.tokenizers import (ABLATION_TOKENIZERS, DEFAULT_TOKENIZERS, CodeSpace, full_vocab_footprint,
                                      make_tokenizer, parse_spec)
from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary
from medtok.toy import toy_vocabulary


def _vocab(rows):
    return Vocabulary(pd.DataFrame([dict(code_id=c, system=c.split(":")[0], code=c.split(":")[1], description=d,
                                         parents=p, synonyms=[], kind=k) for c, d, p, k in rows]))


# the built vocabulary's shapes, including its single-category-block cycle (B10 <-> B10-B10)
MINI = _vocab([
    ("ICD10CM:CH01", "Certain infectious and parasitic diseases (A00-B99)", [], "group"),
    ("ICD10CM:B10-B10", "Other human herpesviruses", ["ICD10CM:B10"], "group"),
    ("ICD10CM:B10", "Other human herpesviruses", ["ICD10CM:B10-B10"], "group"),
    ("ICD10CM:B10.01", "Human herpesvirus 6 encephalitis", ["ICD10CM:B10"], "code"),
    ("ICD10CM:CH04", "Endocrine, nutritional and metabolic diseases (E00-E89)", [], "group"),
    ("ICD10CM:E08-E13", "Diabetes mellitus", ["ICD10CM:CH04"], "group"),
    ("ICD10CM:E11", "Type 2 diabetes mellitus", ["ICD10CM:E08-E13"], "group"),
    ("ICD10CM:E11.9", "Type 2 diabetes mellitus without complications", ["ICD10CM:E11"], "code"),
    ("ICD9CM:390-459", "Diseases of the circulatory system", [], "group"),
    ("ICD9CM:420-429", "Other forms of heart disease", ["ICD9CM:390-459"], "group"),
    ("ICD9CM:428", "Heart failure", ["ICD9CM:420-429"], "group"),
    ("ICD9CM:428.0", "Congestive heart failure, unspecified", ["ICD9CM:428"], "code"),
    ("ICD9CM:V01-V91", "Supplementary classification", [], "group"),
    ("ICD9CM:V40-V49", "Conditions influencing health status", ["ICD9CM:V01-V91"], "group"),
    ("ICD9CM:V45", "Other postprocedural states", ["ICD9CM:V40-V49"], "group"),
    ("ICD9CM:V45.8", "Other postprocedural status", ["ICD9CM:V45"], "group"),
    ("ICD9CM:V45.81", "Aortocoronary bypass status", ["ICD9CM:V45.8"], "code"),
    ("ICD9CM:740-759", "Congenital anomalies", [], "group"),
    ("ICD9CM:759", "Other and unspecified congenital anomalies", ["ICD9CM:740-759"], "group"),
    ("ICD9CM:759.9", "Congenital anomaly, unspecified", ["ICD9CM:759"], "code"),
    ("ICD9PCS:35-39", "Operations on the cardiovascular system", [], "group"),
    ("ICD9PCS:38.93", "Venous catheterization, not elsewhere classified", ["ICD9PCS:35-39"], "code"),
    ("ICD10PCS:0", "Medical and Surgical", [], "group"),
    ("ICD10PCS:0D", "Gastrointestinal System", ["ICD10PCS:0"], "group"),
    ("ICD10PCS:0DT", "Resection", ["ICD10PCS:0D"], "group"),
    ("ICD10PCS:0DTJ", "Appendix", ["ICD10PCS:0DT"], "group"),
    ("ICD10PCS:0DTJ4ZZ", "Resection of Appendix, Percutaneous Endoscopic Approach", ["ICD10PCS:0DTJ"], "code"),
])

EXPECTED = {
    "ICD10CM:E11.9": ("ICD10CM:CH04", "ICD10CM:E08-E13", "ICD10CM:E11"),
    "ICD10CM:B10.01": ("ICD10CM:CH01", "ICD10CM:B10-B10", "ICD10CM:B10"),        # chapter found by range
    "ICD9CM:428.0": ("ICD9CM:390-459", "ICD9CM:420-429", "ICD9CM:428"),
    "ICD9CM:V45.81": ("ICD9CM:V01-V91", "ICD9CM:V40-V49", "ICD9CM:V45"),
    "ICD9CM:759.9": ("ICD9CM:740-759", None, "ICD9CM:759"),                     # a chapter without blocks
    "ICD9PCS:38.93": ("ICD9PCS:35-39", "ICD9PCS:38", "ICD9PCS:38.9"),
    "ICD10PCS:0DTJ4ZZ": ("ICD10PCS:0", "ICD10PCS:0D", "ICD10PCS:0DT"),
    "MEDICATION//aspirin": (None, None, None),
    "ICD10CM:Z99.99": (None, None, None),                                       # not in the vocabulary
}


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_hierarchy_levels_on_fixture_vocabulary(code):
    assert Hierarchy(MINI).code_levels(code) == EXPECTED[code]


@pytest.mark.skipif(not (default_vocab_dir() / "codes.parquet").exists(), reason="vocabulary cache not built")
def test_hierarchy_levels_on_built_vocabulary():
    from ehr.benchmark.hierarchy import default_hierarchy

    h = default_hierarchy()
    for code, levels in EXPECTED.items():
        if code != "ICD10CM:Z99.99":
            assert h.code_levels(code) == levels, code
    assert h.code_levels("ICD9CM:250.00") == ("ICD9CM:240-279", "ICD9CM:249-259", "ICD9CM:250")
    assert h.code_levels("ICD9CM:E880.9") == ("ICD9CM:E000-E999", "ICD9CM:E880-E888", "ICD9CM:E880")
    assert h.code_levels("ICD10CM:S72.001A") == ("ICD10CM:CH19", "ICD10CM:S70-S79", "ICD10CM:S72")
    assert h.code_levels("ICD10CM:QA0.0101")[0] == "ICD10CM:CH17"            # chapter range (Q00-QA0)


def test_specs_parse():
    assert parse_spec("hier")["levels"] == (1, 1, 1) and parse_spec("hier-101-tok")["mode"] == "tokens"
    assert len(ABLATION_TOKENIZERS) == 8 and {parse_spec(t)["levels"] for t in ABLATION_TOKENIZERS} == \
        {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}
    with pytest.raises(KeyError):
        parse_spec("hier-12")


@pytest.fixture(scope="module")
def setup():
    vocab, _ = toy_vocabulary()
    vectors = fixture_vectors(vocab)
    seen_codes = ["ICD10CM:A00.0", "ICD10CM:A00.1", "ICD10CM:B01.0", "MEDICATION//aspirin"]
    unseen = ["ICD10CM:A00.2", "ICD10CM:A00.3", "ICD10CM:B01.1", "ICD10CM:H05.3", "MEDICATION//new"]
    space = CodeSpace(seen_codes + unseen)
    seen = np.isin(np.array(space.codes), seen_codes)
    specs = DEFAULT_TOKENIZERS + ["hier-001", "hier-110-tok", "medtok-n3000"]
    res, info = build_resources(space, specs, vectors=vectors)
    return space, seen, res, specs


def _vec(tok, space, codes):
    with torch.no_grad():
        x, m = tok(torch.from_numpy(space.encode(codes)).view(1, -1))
    return x[0], m[0]


def test_every_tokenizer_handles_unseen_and_out_of_system_codes(setup):
    space, seen, res, specs = setup
    for spec in specs:
        torch.manual_seed(0)
        tok = make_tokenizer(spec, 12, space, seen, res).eval()
        x, m = _vec(tok, space, space.codes[1:])
        assert torch.isfinite(x).all() and m[:, 0].all(), spec
        info = tok.describe()
        assert info["unseen_rule"] and info["trainable_params"] > 0, spec
        a2, a3, b11 = (_vec(tok, space, [c])[0][0, 0] for c in ("ICD10CM:A00.2", "ICD10CM:A00.3", "ICD10CM:B01.1"))
        fam = parse_spec(spec)["family"]
        if fam == "flat":              # one unknown row for every unseen code
            assert torch.equal(a2, a3) and torch.equal(a2, b11)
            assert info["unseen_to_unk"] == 5
        elif fam == "hier":            # unseen codes of one category share its level rows, other categories differ
            p = parse_spec(spec)["levels"]
            if p[2]:
                assert torch.equal(a2, a3) and not torch.equal(a2, b11)
            assert info["unseen_with_levels"] == 4
        else:                           # frozen vectors: every vocabulary code its own input, seen or not
            assert not torch.equal(a2, a3) and not torch.equal(a2, b11)
        if fam in ("medtok", "medtok-ids"):
            # H05.3 has no MedTok vector (outside the checkpoint's systems): counted, gets the UNK row
            h, new = (_vec(tok, space, [c])[0][0, 0] for c in ("ICD10CM:H05.3", "MEDICATION//new"))
            assert info["out_of_system"] == 1 and torch.equal(h, new)


def test_hierarchical_modes(setup):
    space, seen, res, _ = setup
    add = make_tokenizer("hier-111", 8, space, seen, res)
    tok = make_tokenizer("hier-110-tok", 8, space, seen, res)
    x, m = _vec(tok, space, ["ICD10CM:A00.2", "MEDICATION//aspirin"])
    assert tok.tokens_per_code() == 3 and x.shape == (2, 3, 8)
    assert m[0].tolist() == [True, True, False]          # toy codes have a chapter, no block
    assert m[1].tolist() == [True, False, False]         # a drug has no levels
    assert add.tokens_per_code() == 1
    flat = make_tokenizer("hier-000", 8, space, seen, res)
    assert type(flat).__name__ == "FlatTokenizer"


def test_full_vocabulary_footprint():
    d, n = 64, 217_848
    flat = full_vocab_footprint("flat", d, n)
    med = full_vocab_footprint("medtok", d, n)
    ids = full_vocab_footprint("medtok-ids", d, n)
    assert flat["trainable_params"] == (n + 1) * d
    assert med["trainable_params"] == 2 * 256 + 256 * d + d and med["frozen_bytes"] == n * 256 * 2
    assert ids["trainable_params"] == 12000 * d
    assert full_vocab_footprint("hier-111", d, n, {"G0": 10, "G1": 20, "G2": 30})["trainable_params"] == (n + 1 + 63) * d
