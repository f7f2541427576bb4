import gzip
import io
import logging

import pytest

from medtok.codes.normalize import canonical_system, normalize_code, split_code_id
from medtok.codes.sources.user_files import CodeFileError, load_code_file, parse_code_bytes, read_code_file
from medtok.codes.vocabulary import UnknownCodeError
from medtok.toy import toy_vocabulary


@pytest.mark.parametrize("system,raw,expected", [
    ("ICD10CM", "E119", "E11.9"), ("ICD10CM", "e11.9", "E11.9"), ("ICD10CM", "E11", "E11"),
    ("ICD10CM", "S72.001A", "S72.001A"), ("ICD10CM", "E08-E13", "E08-E13"), ("ICD10CM", "CH04", "CH04"),
    ("ICD9CM", "4280", "428.0"), ("ICD9CM", "428.0", "428.0"), ("ICD9CM", "V1582", "V15.82"),
    ("ICD9CM", "E8000", "E800.0"), ("ICD9CM", "250", "250"),
    ("ICD9PCS", "3610", "36.10"), ("ICD9PCS", "00.19", "00.19"),
    ("ICD10PCS", "0016070", "0016070"), ("ATC", "a10ba02", "A10BA02"),
])
def test_valid_spellings(system, raw, expected):
    assert normalize_code(raw, system) == expected


@pytest.mark.parametrize("system,raw", [
    ("ICD10CM", "11E9"), ("ICD10CM", "E1"), ("ICD10CM", "E11.99999"), ("ICD9CM", "42"), ("ICD9CM", "X123"),
    ("ICD9PCS", "3"), ("ICD10PCS", "0016070X"), ("ICD10PCS", "00I6070"), ("ATC", "A1"),
])
def test_malformed_spellings(system, raw):
    assert normalize_code(raw, system) is None


def test_system_aliases_and_prefix_split():
    assert canonical_system("icd-10-cm") == "ICD10CM"
    assert canonical_system("icd9") == "ICD9CM"
    assert split_code_id("icd10cm:E119") == ("ICD10CM", "E119")
    assert split_code_id("E119") == (None, "E119")


def test_vocabulary_resolves_every_spelling_to_one_code():
    vocab, _ = toy_vocabulary()
    ids = {vocab.normalize(s) for s in ["A001", "A00.1", "ICD10CM:A00.1", "icd10cm:a001", "ICD-10-CM:A00.1"]}
    assert ids == {"ICD10CM:A00.1"}
    assert vocab.normalize("100.1") == "ICD9CM:100.1" and vocab.normalize("1001") == "ICD9CM:100.1"
    assert vocab.index_of("A001") == vocab.index_of("ICD10CM:A00.1")


def test_unknown_code_error_names_system_and_nearest_codes():
    vocab, _ = toy_vocabulary()
    with pytest.raises(UnknownCodeError) as e:
        vocab.normalize("ICD10CM:A00.7")
    msg = str(e.value)
    assert "ICD10CM" in msg and "A00.7" in msg and "ICD10CM:A00.1" in msg  # a sibling is suggested
    with pytest.raises(UnknownCodeError, match="malformed ICD10CM"):
        vocab.normalize("ICD10CM:00A")
    with pytest.raises(UnknownCodeError, match="unknown system"):
        vocab.normalize("LOINC:1234-5")
    with pytest.raises(KeyError):  # UnknownCodeError is a KeyError for dict-like callers
        vocab.index_of("ZZZ999")


# ---- strictness: ranges, control characters, non-text ---------------------------------------
@pytest.mark.parametrize("system,raw", [
    ("ICD10CM", "foo-bar"), ("ICD10CM", "E08-E13-E14"), ("ICD9CM", "390-45"), ("ICD9PCS", "1-2"),
    ("ICD10CM", "E11\x009"), ("ICD10CM", "E11\n9"), ("LOINC", "LP12\x00"), ("LOINC", "bad\udc80byte"),
])
def test_malformed_ranges_and_control_characters(system, raw):
    assert normalize_code(raw, system) is None


def test_non_text_is_malformed_and_ranges_keep_their_published_shape():
    for raw in (None, 4280, 42.0, b"E119", ["E11.9"]):
        assert normalize_code(raw, "ICD10CM") is None
    assert normalize_code("e08 - e13", "ICD10CM") == "E08-E13"
    assert normalize_code("390-459", "ICD9CM") == "390-459" and normalize_code("V01-V91", "ICD9CM") == "V01-V91"
    assert normalize_code("01-05", "ICD9PCS") == "01-05"
    assert normalize_code(" E119\r\n", "ICD10CM") == "E11.9"  # surrounding whitespace is no control character


def test_every_code_of_the_built_vocabulary_is_still_a_fixed_point():
    """The stricter rules must not drop codes the build accepted (golden over the built cache)."""
    import pandas as pd

    from medbase.paths import default_vocab_dir

    path = default_vocab_dir() / "codes.parquet"
    if not path.exists():
        pytest.skip("no built vocabulary (scripts/build_vocab.py)")
    codes = pd.read_parquet(path, columns=["system", "code"])
    moved = {c for s, c in zip(codes["system"], codes["code"]) if normalize_code(c, s) != c}
    # the only exceptions predate this rule: ICD-10-CM "QA0..." rows that no ICD-10-CM spelling
    # rule accepts (they come from the package data as is)
    assert all(c.startswith("QA0") for c in moved), sorted(moved)[:10]
    ranges = codes[codes["code"].str.contains("-") & ~codes["code"].str.startswith("QA0")]
    assert len(ranges) > 0 and all(normalize_code(c, s) == c for s, c in zip(ranges["system"], ranges["code"]))


def test_rows_outside_the_spelling_rules_still_resolve():
    """The ICD-10-CM package data ships "QA0..." codes no ICD-10-CM spelling rule accepts; the
    vocabulary holds them, so their stored id (and the code as stored) must resolve, not raise
    'malformed' (found when a prefix-experiment caption drew ICD10CM:QA0.01)."""
    import pandas as pd

    from medtok.codes.vocabulary import UnknownCodeError, Vocabulary

    rows = [dict(code_id="ICD10CM:QA0.0101", system="ICD10CM", code="QA0.0101", description="SCN2A-related disorder",
                 parents=[], synonyms=[], kind="code"),
            dict(code_id="ICD10CM:E11.9", system="ICD10CM", code="E11.9", description="Type 2 diabetes", parents=[],
                 synonyms=[], kind="code")]
    v = Vocabulary(pd.DataFrame(rows))
    assert normalize_code("QA0.0101", "ICD10CM") is None  # the rules still call the spelling malformed
    assert v.description("ICD10CM:QA0.0101") == "SCN2A-related disorder"
    assert v.normalize("qa0.0101", "ICD10CM") == "ICD10CM:QA0.0101" and "ICD10CM:QA0.0101" in v
    assert v.normalize("e119") == "ICD10CM:E11.9"
    with pytest.raises(UnknownCodeError, match="malformed"):
        v.normalize("ICD10CM:QA0.0102")  # not in the vocabulary: still malformed, still an error


# ---- user vocabulary files: every bad row reported with its row and line, never a crash ------
def test_user_csv_unterminated_quote_and_wrong_field_count_are_reported(tmp_path, caplog):
    f = tmp_path / "extra.csv"
    f.write_text("code,system,description\n"
                 "LP1,LOINC,Glucose\n"
                 'LP2,LOINC,"Sodium never closes\n'
                 "LP3,LOINC,Potassium\n"
                 "LP4,LOINC,Chloride,surplus field\n"
                 "LP5,LOINC,Calcium,\n")  # an empty trailing field (trailing comma) is harmless
    with caplog.at_level(logging.WARNING):
        table, bad = read_code_file(f)
    assert list(table.codes["code_id"]) == ["LOINC:LP1", "LOINC:LP3", "LOINC:LP5"]
    assert table.skipped == 2 and [(b.row, b.line) for b in bad] == [(1, 3), (3, 5)]
    assert "unterminated quote" in bad[0].reason and "4 fields, the header has 3" in bad[1].reason
    assert "extra.csv row 1 skipped (line 3): unterminated quote" in caplog.text
    assert "extra.csv row 3 skipped (line 5)" in caplog.text and "2 bad rows skipped, 3 kept" in caplog.text
    assert load_code_file(f).skipped == 2  # what build_vocab --extra-codes calls


def test_user_file_bytes_encodings_and_file_level_errors(tmp_path):
    rows = "code,system,description\nLP1,LOINC,Glucose\nLP2,LOINC,Caf\xe9\nLP3,LOINC,Urea\n"
    table, bad = parse_code_bytes(rows.encode("latin-1"), "x.csv")  # one Latin-1 byte: that row only
    assert list(table.codes["code_id"]) == ["LOINC:LP1", "LOINC:LP3"] and "not UTF-8" in bad[0].reason
    for data, name in ((b"\xef\xbb\xbf" + rows.encode(), "x.csv"), (rows.encode("utf-16"), "x.csv"),
                       (gzip.compress(rows.replace(",", "\t").encode()), "x.tsv.gz")):
        assert list(parse_code_bytes(data, name)[0].codes["description"]) == ["Glucose", "Café", "Urea"]
    with pytest.raises(CodeFileError, match="no 'description' column"):
        parse_code_bytes(b"code,system\nLP1,LOINC\n", "x.csv")
    with pytest.raises(CodeFileError, match="no header row"):
        parse_code_bytes(b'"code,system\nLP1,LOINC\n', "x.csv")
    with pytest.raises(CodeFileError, match="not a readable gzip"):
        parse_code_bytes(b"not gzip", "x.csv.gz")
    with pytest.raises(CodeFileError, match="not a readable parquet"):
        parse_code_bytes(b"PAR1 not really", "x.parquet")
    assert isinstance(CodeFileError("x"), ValueError)


def test_user_file_rows_with_bad_systems_or_typed_cells(tmp_path):
    import pandas as pd

    table, bad = parse_code_bytes(b"code,system,description\nX1,my sys,spaces in a system\nX2,A:B,colon\n"
                                  b"X3,,no system\nX4,LOCAL,fine\n", "x.csv")
    assert list(table.codes["code_id"]) == ["LOCAL:X4"]
    assert ["malformed system name" in b.reason for b in bad] == [True, True, False]
    buf = io.BytesIO()
    pd.DataFrame({"code": ["ICD10CM//E11.9", "ICD10CM//E11.65", None],
                  "description": ["T2DM", None, "no code"],
                  "parent_codes": [["ICD10CM//E11"], [], []]}).to_parquet(buf)
    table, bad = parse_code_bytes(buf.getvalue(), "codes.parquet")
    assert list(table.codes["code_id"]) == ["ICD10CM:E11.9"] and table.codes["parents"][0] == ["ICD10CM:E11"]
    assert [(b.row, b.line) for b in bad] == [(1, None), (2, None)]
