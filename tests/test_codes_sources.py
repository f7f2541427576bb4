"""Each offline source loader on its real packaged data, checked on known codes."""

import pandas as pd
import pytest

from medbase.paths import shared_data_path
from medtok.codes.sources.atc import atc_parent, load_atc
from medtok.codes.sources.ccs import load_ccs, load_ccsr
from medtok.codes.sources.icd10cm import load_icd10cm
from medtok.codes.sources.icd10pcs import load_icd10pcs
from medtok.codes.sources.icd9 import load_icd9cm, load_icd9pcs, load_icd_gems
from medtok.codes.sources.user_files import load_code_file


def by_id(table):
    return table.codes.set_index("code_id")


def test_icd10cm_tree_with_chapters_blocks_and_inclusion_terms():
    t = load_icd10cm()
    c = by_id(t)
    assert len(c) > 95_000 and c.index.is_unique
    assert c.loc["ICD10CM:E11.9", "description"] == "Type 2 diabetes mellitus without complications"
    assert c.loc["ICD10CM:E11.9", "parents"] == ["ICD10CM:E11"]
    assert c.loc["ICD10CM:E11", "parents"] == ["ICD10CM:E08-E13"]
    assert c.loc["ICD10CM:E08-E13", "parents"] == ["ICD10CM:CH04"]
    assert c.loc["ICD10CM:E11.9", "kind"] == "code" and c.loc["ICD10CM:E11", "kind"] == "group"
    # a one-category block gets its own id instead of colliding with its category
    assert c.loc["ICD10CM:B10", "parents"] == ["ICD10CM:B10-B10"]
    assert c["synonyms"].map(len).sum() > 10_000


def test_icd9_diagnoses_procedures_and_gems():
    dx = by_id(load_icd9cm())
    assert dx.loc["ICD9CM:428.0", "description"] == "Congestive heart failure, unspecified"
    assert dx.loc["ICD9CM:428.0", "parents"] == ["ICD9CM:428"]
    assert dx.loc["ICD9CM:E800.0", "parents"] == ["ICD9CM:E800"]
    px = by_id(load_icd9pcs())
    assert px.loc["ICD9PCS:36.10", "parents"] == ["ICD9PCS:35-39"]
    assert px.loc["ICD9PCS:35-39", "description"].startswith("Operations on the cardiovascular system")
    gems = load_icd_gems().edges
    fwd = gems[gems["type"] == "gem_icd9_icd10"]
    assert ((fwd["src_id"] == "ICD9CM:428.0") & (fwd["dst_id"] == "ICD10CM:I50.9")).any()
    assert len(gems) > 20_000


def test_icd10pcs_axis_hierarchy_and_icd9_procedure_gems():
    t = load_icd10pcs()
    c = by_id(t)
    assert c.loc["ICD10PCS:0016070", "parents"] == ["ICD10PCS:0016"]
    assert [c.loc[f"ICD10PCS:{p}", "parents"] for p in ("0016", "001", "00", "0")] == \
        [["ICD10PCS:001"], ["ICD10PCS:00"], ["ICD10PCS:0"], []]
    assert c.loc["ICD10PCS:0", "description"] == "Medical and Surgical"
    assert "Bypass" in c.loc["ICD10PCS:001", "description"]
    assert (t.edges["type"] == "gem_icd9pcs_icd10pcs").sum() > 50_000


def test_atc_levels_and_user_atc_file(tmp_path):
    assert [atc_parent(c) for c in ("A10BA02", "A10BA", "A10B", "A10", "A")] == ["A10BA", "A10B", "A10", "A", None]
    c = by_id(load_atc())
    assert c.loc["ATC:A10BA02", "description"].lower() == "metformin"
    assert c.loc["ATC:A10BA02", "parents"] == ["ATC:A10BA"]
    f = tmp_path / "atc.csv"
    pd.DataFrame({"atc_code": ["B01", "B01A", "B01AC06", "bad!", "B01AA"], "atc_name": ["x", "y", "acetylsalicylic acid", "z", ""]}).to_csv(f, index=False)
    t = load_atc(f)
    assert t.skipped == 2 and by_id(t).loc["ATC:B01AC06", "parents"] == ["ATC:B01A"]  # B01AC missing: climbs


def test_ccs_and_ccsr_groups_with_membership_edges():
    ccs = load_ccs()
    c = by_id(ccs)
    assert c.loc["CCS:100", "description"] == "Acute myocardial infarction"
    assert c.loc["CCS:100", "parents"] == ["CCS:ML7.2"]
    e = ccs.edges
    assert ((e["src_id"] == "ICD10CM:I21.4") & (e["dst_id"] == "CCS:100")).any()
    assert ((e["src_id"] == "ICD9CM:410.71") & (e["dst_id"] == "CCS:100")).any()
    ccsr = load_ccsr()
    assert (ccsr.edges["src_id"] == "ICD10CM:A00.0").any()
    assert by_id(ccsr).loc["CCSR:CIR", "description"] == "Diseases of the circulatory system"


def test_user_file_with_bad_rows_is_reported_and_skipped(tmp_path, caplog):
    f = tmp_path / "codes.csv"
    f.write_text("code,system,description,parents\n"
                 "LP1234-5,LOINC,Glucose [Mass/volume] in Blood,\n"
                 ",LOINC,no code,\n"                     # no code
                 "E119,ICD10CM,,\n"                      # no description
                 "11E9,ICD10CM,malformed icd10,\n"       # malformed code
                 "ICD10CM:E11.65,,T2DM with hyperglycemia,ICD10CM:E11.6\n")
    t = load_code_file(f)
    assert t.skipped == 3
    c = by_id(t)
    assert list(c.index) == ["LOINC:LP1234-5", "ICD10CM:E11.65"]
    assert c.loc["ICD10CM:E11.65", "parents"] == ["ICD10CM:E11.6"]
    assert "row 1 skipped" in caplog.text


def test_meds_codes_parquet(tmp_path):
    f = tmp_path / "codes.parquet"
    pd.DataFrame({"code": ["RXNORM//197361", "RXNORM//8591"], "description": ["amlodipine 5 MG Oral Tablet", "amlodipine"],
                  "parent_codes": [["RXNORM//8591"], []]}).to_parquet(f)
    c = by_id(load_code_file(f))
    assert c.loc["RXNORM:197361", "parents"] == ["RXNORM:8591"]


def test_mimic_d_icd_tables():
    path = shared_data_path("ehr", "mimic3-demo", "d_icd_diagnoses.csv.gz")
    if path is None:
        pytest.skip("shared data absent (set MEDTOK_SHARED_DATA): MIMIC-III demo d_icd_diagnoses")
    t = load_code_file(path)
    assert len(t.codes) > 14_000 and (t.codes["system"] == "ICD9CM").all()
    assert by_id(t).loc["ICD9CM:428.0", "description"].startswith("Congestive heart failure")


def test_icd10cm_single_category_blocks_hang_under_their_chapter():
    """Blocks holding one category ("B10-B10") used to point at their own category, which
    pointed back: a 2-cycle that left every code below it without a chapter ancestor."""
    from medtok.codes.sources.icd10cm import load_icd10cm

    codes = load_icd10cm().codes.set_index("code_id")
    assert codes.loc["ICD10CM:B10-B10", "parents"] == ["ICD10CM:CH01"]
    assert codes.loc["ICD10CM:B10", "parents"] == ["ICD10CM:B10-B10"]
    parents = codes["parents"].to_dict()
    for cid in ("ICD10CM:B10.01", "ICD10CM:M99.01", "ICD10CM:B10-B10"):
        seen, node = set(), cid
        while parents[node]:
            assert node not in seen, f"is_a cycle through {node}"
            seen.add(node)
            node = parents[node][0]
        assert node.startswith("ICD10CM:CH"), (cid, node)
