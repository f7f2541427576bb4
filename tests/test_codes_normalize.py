import pytest

from medtok.codes.normalize import canonical_system, normalize_code, split_code_id
from medtok.toy import toy_vocabulary
from medtok.codes.vocabulary import UnknownCodeError


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
