"""Code spelling rules: `E119`, `E11.9`, `icd10cm:e11.9` all become `ICD10CM:E11.9`.

Each system has one canonical spelling (the one its publisher prints). Dots are
inserted by position, so undotted EHR spellings (MIMIC stores `4280`) resolve.

Contract (property-tested in tests/test_property_parsers.py): `normalize_code` never raises;
it returns the canonical spelling or None ("malformed"), and the canonical spelling is a fixed
point (normalising it again gives it back). `Vocabulary.normalize` turns None into
`UnknownCodeError`. Block ranges are accepted only in their published shape (`E08-E13`,
`390-459`, `01-05`), and no code may hold control characters or lone surrogates.
"""

from __future__ import annotations

import re

# canonical system names and the aliases users type
SYSTEM_ALIASES = {
    "ICD10CM": "ICD10CM", "ICD10": "ICD10CM", "ICD-10-CM": "ICD10CM", "ICD10-CM": "ICD10CM",
    "ICD9CM": "ICD9CM", "ICD9": "ICD9CM", "ICD-9-CM": "ICD9CM", "ICD9-CM": "ICD9CM", "ICD9DX": "ICD9CM",
    "ICD9PCS": "ICD9PCS", "ICD9PROC": "ICD9PCS", "ICD9PX": "ICD9PCS", "ICD-9-PCS": "ICD9PCS",
    "ICD10PCS": "ICD10PCS", "ICD-10-PCS": "ICD10PCS",
    "ATC": "ATC", "NDC": "NDC", "CCS": "CCS", "CCSPX": "CCSPX", "CCSR": "CCSR", "PHECODE": "PHECODE",
    "MONDO": "MONDO", "UMLS": "UMLS", "RXNORM": "RXNORM", "SNOMED": "SNOMEDCT", "SNOMEDCT": "SNOMEDCT",
    "CPT": "CPT", "LOINC": "LOINC",
}

_ICD10CM_RE = re.compile(r"^[A-Z][0-9][0-9A-Z]([0-9A-Z]{1,4})?$")
_ICD9DX_RE = re.compile(r"^([0-9]{3}[0-9]{0,2}|V[0-9]{2}[0-9]{0,2}|E[0-9]{3}[0-9]?)$")
_ICD9PX_RE = re.compile(r"^[0-9]{2}[0-9]{0,2}$")
_ICD10PCS_RE = re.compile(r"^[0-9A-HJ-NP-Z]{1,7}$")
_ATC_RE = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")
# block / section ranges as the sources print them (every range in the built vocabulary has one
# of these shapes); anything else with a dash is malformed
_ICD10CM_RANGE_RE = re.compile(r"^[A-Z][0-9][0-9A-Z]-[A-Z][0-9][0-9A-Z]$")
_ICD9DX_RANGE_RE = re.compile(r"^([0-9]{3}|V[0-9]{2}|E[0-9]{3})-([0-9]{3}|V[0-9]{2}|E[0-9]{3})$")
_ICD9PX_RANGE_RE = re.compile(r"^[0-9]{2}-[0-9]{2}$")
# C0 / C1 control characters (NUL, newlines, escapes) and lone surrogates (bytes that were not
# UTF-8): never part of a code
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def canonical_system(system: str) -> str:
    key = str(system).strip().upper().replace("_", "-")
    if key in SYSTEM_ALIASES:
        return SYSTEM_ALIASES[key]
    key2 = key.replace("-", "")
    return SYSTEM_ALIASES.get(key2, key2)


def _undot(code: str) -> str:
    # `$` in the patterns would accept one trailing newline: strip() removes it, and
    # normalize_code rejects control characters left inside before any rule runs
    return code.strip().upper().replace(".", "").replace(" ", "")


def normalize_icd10cm(code: str) -> str | None:
    c = _undot(code)
    if _ICD10CM_RANGE_RE.match(c) or re.fullmatch(r"CH[0-9]{2}", c):  # block (E08-E13) or chapter (CH04)
        return c
    if not _ICD10CM_RE.match(c):
        return None
    return c if len(c) <= 3 else f"{c[:3]}.{c[3:]}"


def normalize_icd9cm(code: str) -> str | None:
    c = _undot(code)
    if _ICD9DX_RANGE_RE.match(c):  # section range such as 390-459
        return c
    if not _ICD9DX_RE.match(c):
        return None
    head = 4 if c.startswith("E") else 3
    return c if len(c) <= head else f"{c[:head]}.{c[head:]}"


def normalize_icd9pcs(code: str) -> str | None:
    c = _undot(code)
    if _ICD9PX_RANGE_RE.match(c):
        return c
    if not _ICD9PX_RE.match(c):
        return None
    return c if len(c) <= 2 else f"{c[:2]}.{c[2:]}"


def normalize_icd10pcs(code: str) -> str | None:
    c = _undot(code)
    return c if _ICD10PCS_RE.match(c) else None


def normalize_atc(code: str) -> str | None:
    c = _undot(code)
    return c if _ATC_RE.match(c) else None


_RULES = {
    "ICD10CM": normalize_icd10cm,
    "ICD9CM": normalize_icd9cm,
    "ICD9PCS": normalize_icd9pcs,
    "ICD10PCS": normalize_icd10pcs,
    "ATC": normalize_atc,
}


def normalize_code(code: str, system: str) -> str | None:
    """Canonical spelling of `code` in `system` (no prefix), or None if malformed.

    Never raises: anything that is not text, or holds control characters, is malformed."""
    if not isinstance(code, str) or _CONTROL_RE.search(code.strip()):
        return None
    rule = _RULES.get(system)
    if rule is None:  # systems without a spelling rule (LOINC, RXNORM, user systems): trimmed text
        c = code.strip()
        return c or None
    return rule(code)


def split_code_id(text: str) -> tuple[str | None, str]:
    """`'icd10cm:E119'` -> `('ICD10CM', 'E119')`; a bare code gives `(None, code)`."""
    text = str(text).strip()
    if ":" in text:
        head, tail = text.split(":", 1)
        sys_ = canonical_system(head)
        if sys_ in SYSTEM_ALIASES.values() or head.isalpha():
            return sys_, tail.strip()
    return None, text


def make_code_id(system: str, code: str) -> str:
    return f"{system}:{code}"
