"""Property-based tests (hypothesis) over the parsers users feed: code normalisation, the
multiple-choice file loader (JSON / JSONL / CSV), the MedDDx loader and user vocabulary files.

Contract under test: every input is either parsed or rejected with the project's own error:
    normalize_code              canonical spelling or None (never raises)
    Vocabulary.normalize        a code_id of the vocabulary or UnknownCodeError
    parse_mc_bytes / MedDDx     questions + ParseIssues for skipped records, or DatasetFileError
    parse_code_bytes            SourceTable + BadRows for skipped rows, or CodeFileError
Strategies are structure-aware: valid records are generated first (each "valid" test asserts
the share of them that parses), then mutated: missing fields, wrong types, huge values, odd
text, bytes that are not UTF-8, unterminated quotes, truncation, ... Hypothesis draws the
structure (format, layout, answer form, which mutation, where); the text inside comes from a
seeded `random.Random` it also draws (one draw instead of one per character keeps ~11,000
examples within seconds). Every test counts the examples it ran; the last test asserts the
total (>= 10,000) when the whole file ran. Deterministic: derandomize=True, no database.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import random
import re
import unicodedata
from collections import Counter

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtok.codes.normalize import _RULES, normalize_code, split_code_id
from medtok.codes.sources.user_files import CodeFileError, parse_code_bytes
from medtok.codes.vocabulary import UnknownCodeError
from medtok.toy import toy_vocabulary
from qa.datasets.common import DatasetFileError, parse_letter
from qa.datasets.mc_file import parse_mc_bytes
from qa.datasets.meddx import difficulty, parse_meddx_bytes
from qa.types import LETTERS, MCQuestion

# examples per test; the total is asserted by test_total_generated_inputs
BUDGET = {
    "codes_valid": 2000, "codes_any_text": 2000, "vocabulary_normalize": 1000,
    "mc_valid": 1000, "mc_mutated": 1500, "mc_bytes": 400,
    "meddx_valid": 600, "meddx_mutated": 900,
    "vocab_valid": 600, "vocab_mutated": 900, "vocab_bytes": 300, "vocab_parquet": 100,
}
MIN_TOTAL = 10_000
VALID_SHARE = 0.99  # share of generated valid records that must parse (measured: all of them)
RAN: Counter = Counter()
SHARES: dict[str, tuple[int, int]] = {}  # test -> (valid records generated, parsed): for the notes


def budget(name: str):
    return settings(max_examples=BUDGET[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True, scope="module")
def _quiet_parsers():
    """Thousands of skipped records would be logged (and captured) otherwise."""
    loggers = [logging.getLogger(n) for n in ("qa.datasets", "medtok.codes.sources.user_files")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    yield
    for lg, lvl in zip(loggers, levels):
        lg.setLevel(lvl)


# ---- text --------------------------------------------------------------------------------
RANDOMS = st.randoms(use_true_random=True)  # one draw seeds it (derandomize=True keeps it fixed)
# odd but valid characters: zero-width, right-to-left, no-break and line separators, emoji,
# ligatures and letters whose case mapping changes length, CSV / JSON punctuation
ODD = "\u200b\u202e\u2028\u00a0éßİﬀ\U0001f600,\";'\\|/:()"
COMMON = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      -.,"
SAFE_CATEGORIES = {"Cs", "Cc", "Co", "Cn"}  # surrogates, controls, private use, unassigned: never generated
NOT_UTF8 = "\ue000"  # private use: written as the byte 0x80 (not UTF-8) after encoding


def rchar(rnd: random.Random, newline: bool) -> str:
    r = rnd.random()
    if r < 0.6:
        return rnd.choice(COMMON)
    if r < 0.8:
        return rnd.choice(ODD + ("\n\t" if newline else ""))
    while True:  # any assigned, printable code point of any script
        c = chr(rnd.randrange(0xA0, 0x30000))
        if unicodedata.category(c) not in SAFE_CATEGORIES:
            return c


def rtext(rnd: random.Random, max_len: int = 16, newline: bool = False) -> str:
    """Non-blank text: the first character is a letter, so `strip()` never empties it."""
    body = "".join(rchar(rnd, newline) for _ in range(rnd.randint(0, max_len)))
    return rnd.choice("abcdefghijklmnopqrstuvwxyzéΩж中") + body


def rpad(rnd: random.Random, text: str) -> str:
    return rnd.choice(["", "", " ", "\u00a0", "\t"]) + text + rnd.choice(["", "", " ", "\u2028"])


# ---- code normalisation --------------------------------------------------------------------
D, U = "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
CODE_SYSTEMS = ("ICD10CM", "ICD9CM", "ICD9PCS", "ICD10PCS", "ATC", "LOINC")


def rs(rnd: random.Random, alphabet: str, n: int, m: int | None = None) -> str:
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(n, n if m is None else m)))


def dotted(head: str, tail: str) -> str:
    return head + (f".{tail}" if tail else "")


def canonical_code(rnd: random.Random, system: str) -> str:
    """A canonical spelling of `system`, drawn from its published shape."""
    if system == "ICD10CM":
        cat = rs(rnd, U, 1) + rs(rnd, D, 1) + rs(rnd, D + U, 1)
        if rnd.random() < 0.1:
            return f"{cat}-{rs(rnd, U, 1)}{rs(rnd, D, 2)}"  # block range
        return dotted(cat, rs(rnd, D + U, 0, 4))
    if system == "ICD9CM":
        kind = rnd.choice(["num", "V", "E", "range"])
        if kind == "range":
            return f"{rs(rnd, D, 3)}-{rs(rnd, D, 3)}"
        head = {"num": rs(rnd, D, 3), "V": "V" + rs(rnd, D, 2), "E": "E" + rs(rnd, D, 3)}[kind]
        return dotted(head, rs(rnd, D, 0, 1 if kind == "E" else 2))
    if system == "ICD9PCS":
        return dotted(rs(rnd, D, 2), rs(rnd, D, 0, 2))
    if system == "ICD10PCS":
        return rs(rnd, PCS, 1, 7)
    if system == "ATC":
        full = rs(rnd, U, 1) + rs(rnd, D, 2) + rs(rnd, U, 2) + rs(rnd, D, 2)
        return full[: rnd.choice([1, 3, 4, 5, 7])]
    # no spelling rule (LOINC, user systems): the trimmed text itself, without ":" (a prefix)
    return rtext(rnd, 10).replace(":", "").replace("/", "").strip()


def spelled(rnd: random.Random, system: str, canonical: str) -> str:
    """A way users write the same code: undotted, lower case, padded."""
    text = canonical
    if system in _RULES:
        if rnd.random() < 0.5:
            text = text.replace(".", "")
        if rnd.random() < 0.5:
            text = text.lower()
    return rnd.choice(["", " ", "\t"]) + text + rnd.choice(["", " ", "\r\n", "\n"])


def test_valid_codes_normalise_to_their_canonical_form():
    stats = Counter()

    @budget("codes_valid")
    @given(st.sampled_from(CODE_SYSTEMS), RANDOMS)
    def run(system, rnd):
        canonical = canonical_code(rnd, system)
        stats["examples"] += 1
        got = normalize_code(spelled(rnd, system, canonical), system)
        stats["parsed"] += got == canonical
        if got is not None:
            assert normalize_code(got, system) == got  # canonical spellings are fixed points

    run()
    RAN["codes_valid"] = stats["examples"]
    SHARES["codes_valid"] = (stats["examples"], stats["parsed"])
    assert stats["examples"] >= BUDGET["codes_valid"]
    assert stats["parsed"] / stats["examples"] >= VALID_SHARE, stats


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
ANY_CODE = st.one_of(
    st.text(max_size=12),                                      # hypothesis' own text (all of Unicode)
    st.text(alphabet=D + U + ".- \n\t:", max_size=12),         # code-like characters in any order
    st.sampled_from(["E11\x00", "E11\udc80", "E08-E13x", "foo-bar", "428.0\n1", "ﬀ1", "ı10", "", " ", "-"]),
    st.none(), st.integers(), st.floats(), st.binary(max_size=4), st.just(10 ** 5000), st.lists(st.text(), max_size=2))


def test_any_text_normalises_to_a_fixed_point_or_none():
    stats = Counter()

    @budget("codes_any_text")
    @given(st.sampled_from([*_RULES, "LOINC"]), ANY_CODE)
    def run(system, raw):
        stats["examples"] += 1
        got = normalize_code(raw, system)  # must not raise, whatever `raw` is
        if got is not None:
            stats["accepted"] += 1
            assert isinstance(got, str) and got == got.strip() and not _CONTROL.search(got)
            assert normalize_code(got, system) == got
        if isinstance(raw, str):
            sys_, _ = split_code_id(raw)
            assert sys_ is None or isinstance(sys_, str)

    run()
    RAN["codes_any_text"] = stats["examples"]
    assert stats["examples"] >= BUDGET["codes_any_text"]
    assert 0 < stats["accepted"] < stats["examples"]  # the mix holds both valid and malformed codes


TOY, _ = toy_vocabulary(0)
TOY_CODES = list(TOY.codes["code_id"])
TOY_SET = set(TOY_CODES)
SPELLING_FORMS = ("id", "lower", "undotted", "alias", "bare", "mutated", "garbage")


def test_vocabulary_normalize_gives_a_known_code_or_unknown_code_error():
    stats = Counter()

    @budget("vocabulary_normalize")
    @given(st.sampled_from(TOY_CODES), st.sampled_from(SPELLING_FORMS), RANDOMS)
    def run(cid, form, rnd):
        system, code = cid.split(":", 1)
        expected = cid
        if form == "id":
            text = cid
        elif form == "lower":
            text = cid.lower()
        elif form == "undotted" and "-" not in code:
            text = f"{system}:{code.replace('.', '')}"
        elif form == "alias":
            text = f"{rnd.choice({'ICD10CM': ['icd-10-cm', 'ICD10'], 'ICD9CM': ['icd9', 'ICD-9-CM']}[system])}:{code}"
        elif form == "bare" and system == "ICD10CM":  # bare codes try ICD-10-CM first
            text = code
        elif form == "garbage":
            text, expected = rtext(rnd, 12), None
        else:  # one character changed: may still name another code, or none
            pos = rnd.randrange(len(cid) + 1)
            text, expected = cid[:pos] + rnd.choice(["", "9", "X", ":", ".", " ", "\x00", "é"]) + cid[pos + 1:], None
        stats["examples"] += 1
        stats["valid"] += expected is not None
        try:
            got = TOY.normalize(text)
        except UnknownCodeError as e:
            assert str(e)  # names the system / nearest codes
            stats["rejected"] += 1
            return
        assert got in TOY_SET
        stats["parsed"] += expected is not None and got == expected

    run()
    RAN["vocabulary_normalize"] = stats["examples"]
    SHARES["vocabulary_normalize"] = (stats["valid"], stats["parsed"])
    assert stats["examples"] >= BUDGET["vocabulary_normalize"]
    assert stats["parsed"] / stats["valid"] >= VALID_SHARE, stats
    assert stats["rejected"] > 0


# ---- multiple-choice files -----------------------------------------------------------------
QUESTION_KEYS = ("question", "query", "stem", "prompt")
ANSWER_KEYS = ("answer_idx", "answer", "cop", "label", "answerKey", "answer_index")
MC_LAYOUTS = ("list", "letters", "hf", "columns", "medmcqa", "option_x")
ANSWER_FORMS = ("letter", "lower", "paren", "dot", "index", "digits", "text")


def _ambiguous(text: str) -> bool:
    """Option texts an answer given as text could not name unambiguously (it reads as a letter or index)."""
    return parse_letter(text) is not None or text.strip().isdecimal()


def mc_record(rnd: random.Random, layout: str, form: str, index_base: int, csv_: bool) -> tuple[dict, dict]:
    """(record as a user file holds it, what it must parse to)."""
    n = rnd.choice([2, 2, 3, 4, 4, 4, 5, 6, 10])
    options: list[str] = []
    while len(options) < n:  # distinct after strip + casefold, so a text answer names one option
        o = rpad(rnd, rtext(rnd, 12))
        if o.strip().casefold() not in {x.strip().casefold() for x in options}:
            options.append(o)
    question = rpad(rnd, rtext(rnd, 30, newline=True))
    answer = rnd.randrange(n)
    rec: dict = {rnd.choice(QUESTION_KEYS): question}
    if layout == "list":
        rec["options"] = options
    elif layout == "letters":
        rec[rnd.choice(["options", "choices"])] = {LETTERS[i]: o for i, o in enumerate(options)}
    elif layout == "hf":
        rec["choices"] = {"label": list(LETTERS[:n]), "text": options}
    elif layout == "columns":
        rec.update({LETTERS[i]: o for i, o in enumerate(options)})
    elif layout == "medmcqa":
        rec.update({f"op{'abcdefghij'[i]}": o for i, o in enumerate(options)})
    else:
        rec.update({f"option_{'abcdefghij'[i]}": o for i, o in enumerate(options)})
    if form == "text" and _ambiguous(options[answer]):
        form = "letter"
    rec[rnd.choice(ANSWER_KEYS)] = {
        "letter": LETTERS[answer], "lower": LETTERS[answer].lower(), "paren": f"({LETTERS[answer]})",
        "dot": f"{LETTERS[answer]}.", "index": answer + index_base, "digits": str(answer + index_base),
        "text": options[answer]}[form]
    if rnd.random() < 0.3:
        rec["subject"] = rtext(rnd, 8)
    if rnd.random() < 0.3 and not csv_:
        rec["codes"] = rnd.sample(["ICD10CM:E11.9", "ICD9CM:428.0", "ATC:A10BA02"], rnd.randint(0, 3))
    return rec, {"question": question.strip(), "options": [o.strip() for o in options], "answer": answer}


def _cell(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _csv_line(cells: list[str], delimiter: str = ",") -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter).writerow(cells)
    return buf.getvalue()


def _marked(v):
    """Lone surrogates cannot be encoded: they are written as NOT_UTF8, then as the byte 0x80."""
    return v.replace("\udc80", NOT_UTF8) if isinstance(v, str) else v


def render_records(rnd: random.Random, records: list, fmt: str, layout: str = "list",
                   ids: list[str] | None = None) -> tuple[bytes, list[int] | None]:
    """A file's bytes: JSON (list, {"data": list} or {id: record}), JSON lines or CSV; UTF-8 with
    or without BOM, or UTF-16; LF or CRLF. Also the byte offset where each JSONL / CSV record
    ends (None for JSON documents and UTF-16)."""
    records = [{k: _marked(v) for k, v in r.items()} if isinstance(r, dict) else r for r in records]
    ascii_ = rnd.random() < 0.5
    if fmt == "json":
        doc = {"mapping": lambda: dict(zip(ids, records)), "wrapped": lambda: {"version": "1.0", "data": records},
               "list": lambda: records}[layout]()
        pieces = [json.dumps(doc, ensure_ascii=ascii_, indent=rnd.choice([None, 1]))]
    elif fmt == "jsonl":
        eol = rnd.choice(["\n", "\r\n"])
        pieces = [json.dumps(r, ensure_ascii=ascii_) + eol for r in records]
        if rnd.random() < 0.5:
            pieces[-1] = pieces[-1][: -len(eol)]  # no newline at the end of the file
    else:
        header = list(dict.fromkeys(k for r in records for k in r))
        pieces = [_csv_line(header)] + [_csv_line([_cell(r[k]) if k in r else "" for k in header]) for r in records]
    encoding = rnd.choice(["utf-8", "utf-8", "utf-8-sig", "utf-16"])
    if encoding == "utf-16":  # a lone surrogate code unit stands for "not text" here
        return "".join(pieces).replace(NOT_UTF8, "\udc80").encode(encoding, "surrogatepass"), None
    marker = NOT_UTF8.encode("utf-8")  # UTF-8 is self-synchronising: this matches only U+E000 itself
    data = "".join(pieces).encode(encoding).replace(marker, b"\x80")
    if fmt == "json":
        return data, None
    ends, pos = [], 3 if encoding == "utf-8-sig" else 0
    for piece in pieces:
        pos += len(piece.encode("utf-8").replace(marker, b"\x80"))
        ends.append(pos)
    return data, ends[1:] if fmt == "csv" else ends


MC_CASE = st.tuples(st.sampled_from(["json", "jsonl", "csv"]), st.sampled_from([0, 1]),
                    st.lists(st.tuples(st.sampled_from(MC_LAYOUTS), st.sampled_from(ANSWER_FORMS)), min_size=1,
                             max_size=6),
                    st.sampled_from(["list", "wrapped", "mapping"]), st.booleans(), RANDOMS)


def _check_questions(questions):
    for q in questions:
        assert isinstance(q, MCQuestion)  # constructed, hence validated (MCQuestion.__post_init__)


def test_valid_multiple_choice_files_parse_completely():
    stats = Counter()

    @budget("mc_valid")
    @given(MC_CASE)
    def run(case):
        fmt, index_base, shapes, layout, with_ids, rnd = case
        pairs = [mc_record(rnd, lay, form, index_base, fmt == "csv") for lay, form in shapes]
        records, expected = [r for r, _ in pairs], [e for _, e in pairs]
        layout = layout if fmt == "json" else "list"
        ids = None
        if layout == "mapping":  # public benchmarks: {"question id": record}; the ids are kept
            ids = [i for i in dict.fromkeys(rtext(rnd, 6) for _ in range(3 * len(records)))
                   if i not in QUESTION_KEYS][: len(records)]
            records, expected = records[: len(ids)], expected[: len(ids)]
        elif with_ids:
            ids = [f"q{i}" for i in range(len(records))]
            records = [{**r, "id": i} for r, i in zip(records, ids)]
        data, _ = render_records(rnd, records, fmt, layout, ids)
        stats["examples"] += 1
        stats["valid"] += len(expected)
        qs, issues = parse_mc_bytes(data, fmt, index_base=index_base, stem="s")
        stats["parsed"] += len(qs)
        assert len(qs) + len(issues) == len(expected)
        if not issues:
            assert [(q.question, q.options, q.answer) for q in qs] == [
                (e["question"], e["options"], e["answer"]) for e in expected]
            assert [q.id for q in qs] == (ids or [f"s-{i}" for i in range(len(qs))])

    run()
    RAN["mc_valid"] = stats["examples"]
    SHARES["mc_valid"] = (stats["valid"], stats["parsed"])
    assert stats["examples"] >= BUDGET["mc_valid"]
    assert stats["parsed"] / stats["valid"] >= VALID_SHARE, stats


# -- mutations: record level (before rendering) and byte level (after) --
RECORD_MUTATIONS = ("drop", "junk", "huge_text", "odd_text", "answer_out_of_range")
JUNK_VALUES = [None, True, False, 0, -1, 3, 10 ** 30, 10 ** 400, 1.5, float("nan"), float("inf"), -0.0, [], [1, 2], {},
               {"a": 1}, "", "  ", "nan", "null", "A", "Z", "(", "\u2028", "\ufeff", "\x00", "\udc80bad",
               "[1, 2", '{"A": "x"}', "y" * 10_000, "y" * 150_000]
BYTE_MUTATIONS = ("insert", "truncate", "replace_line", "flip", "unterminated_quote")
BYTE_NOISE = [b"\xff", b"\xc3", b"\x80\x80", b"\x00", b'"', b"\n", b"\r", b"{", b"}", b"[", b",", b"\\",
              b"\xef\xbb\xbf", b"1" * 5000, b"[" * 3000, b'"unterminated', b"\xed\xa0\x80"]


def mutate_record(rnd: random.Random, rec: dict, how: str) -> dict:
    rec, keys = dict(rec), list(rec)
    key = rnd.choice(keys)
    if how == "drop":
        rec.pop(key)
    elif how == "junk":
        rec[key] = rnd.choice(JUNK_VALUES)
    elif how == "huge_text":
        rec[key] = "y" * rnd.choice([10_000, 150_000])
    elif how == "odd_text":
        rec[key] = rnd.choice(["\udc80bad", "\x00", "\ufeff", "\u2028", "  ", "nan"])
    else:
        rec[next((k for k in ANSWER_KEYS if k in rec), key)] = rnd.choice(["K", 11, -1, "99", 2.5])
    return rec


def mutate_bytes(rnd: random.Random, data: bytes, how: str) -> tuple[bytes, int]:
    """(mutated bytes, offset of the first changed byte)."""
    pos = rnd.randint(0, len(data))
    if how == "insert":
        return data[:pos] + rnd.choice(BYTE_NOISE) + data[pos:], pos
    if how == "truncate":
        return data[:pos], pos
    if how == "replace_line":
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        return data[:start] + rnd.randbytes(rnd.randint(0, 20)) + data[len(data) if end < 0 else end:], start
    if how == "flip" and data:
        pos = min(pos, len(data) - 1)
        return data[:pos] + bytes([data[pos] ^ rnd.randint(1, 255)]) + data[pos + 1:], pos
    # a quote opening a field that never closes (at the start of a line, or after a comma)
    starts = [0] + [m.end() for m in re.finditer(rb"[\n,]", data)]
    pos = rnd.choice(starts)
    return data[:pos] + b'"' + data[pos:], pos


MUTATED_MC_CASE = st.tuples(st.sampled_from(["json", "jsonl", "csv"]),
                            st.lists(st.tuples(st.sampled_from(MC_LAYOUTS), st.sampled_from(ANSWER_FORMS),
                                               st.none() | st.sampled_from(RECORD_MUTATIONS)), min_size=1, max_size=5),
                            st.none() | st.sampled_from(BYTE_MUTATIONS), RANDOMS)


def test_mutated_multiple_choice_files_never_crash():
    stats = Counter()

    @budget("mc_mutated")
    @given(MUTATED_MC_CASE)
    def run(case):
        fmt, shapes, byte_mutation, rnd = case
        pairs = [mc_record(rnd, lay, form, 0, fmt == "csv") for lay, form, _ in shapes]
        records = [mutate_record(rnd, r, how) if how else r for (r, _), (_, _, how) in zip(pairs, shapes)]
        data, ends = render_records(rnd, records, fmt)
        raw, offset = mutate_bytes(rnd, data, byte_mutation) if byte_mutation else (data, len(data))
        stats["examples"] += 1
        try:
            qs, issues = parse_mc_bytes(raw, fmt)
        except DatasetFileError as e:
            assert str(e)
            stats["file_errors"] += 1
            return
        _check_questions(qs)
        stats["skipped"] += len(issues)
        for issue in issues:
            assert issue.reason and 0 <= issue.index < len(qs) + len(issues)
        if ends is not None:
            # records wholly before the first changed byte that were not mutated themselves parse
            # (compared by content: a bad CSV row spanning lines can shift the numbering after it)
            parsed = {(q.question, tuple(q.options), q.answer) for q in qs}
            for i, end in enumerate(ends):
                e = pairs[i][1]
                if end <= offset and shapes[i][2] is None:
                    assert (e["question"], tuple(e["options"]), e["answer"]) in parsed, i

    run()
    RAN["mc_mutated"] = stats["examples"]
    assert stats["examples"] >= BUDGET["mc_mutated"]
    assert stats["skipped"] > 0 and stats["file_errors"] > 0  # both outcomes were exercised


def test_arbitrary_bytes_as_a_multiple_choice_file():
    stats = Counter()

    @budget("mc_bytes")
    @given(st.sampled_from(["json", "jsonl", "csv"]),
           st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    def run(fmt, raw):
        stats["examples"] += 1
        try:
            qs, _ = parse_mc_bytes(raw, fmt)
        except DatasetFileError:
            return
        _check_questions(qs)

    run()
    RAN["mc_bytes"] = stats["examples"]
    assert stats["examples"] >= BUDGET["mc_bytes"]


# ---- MedDDx --------------------------------------------------------------------------------
_OPTION_LINE = re.compile(r"^\s*([A-J])\s*:")


def meddx_record(rnd: random.Random) -> tuple[dict, dict]:
    n = rnd.choice([2, 3, 4, 4, 4, 5, 10])
    options = [rtext(rnd, 12).strip() for _ in range(n)]  # the option line's trailing space is not kept
    stem_lines = [rpad(rnd, rtext(rnd, 20)) for _ in range(rnd.randint(1, 3))]
    if _OPTION_LINE.match(stem_lines[-1]):  # a last stem line shaped "B: ..." would read as an option
        stem_lines[-1] = "Q " + stem_lines[-1]
    stem = "\n".join(stem_lines)
    query = stem + "\n" + "\n".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(options)) + rnd.choice(["", "\n"])
    answer = rnd.randrange(n)
    letter = rnd.choice([LETTERS[answer], LETTERS[answer].lower(), f"({LETTERS[answer]})"])
    std = rnd.choice([rnd.uniform(0, 0.1), 0.02, 0.04, 0.0, 0.5])
    rec = {"query": query, "answer": letter, "sim_level_std": std}
    return rec, {"question": stem.strip(), "options": options, "answer": answer, "difficulty": difficulty(std)}


MEDDX_CASE = st.tuples(st.integers(1, 5), st.sampled_from(["json", "jsonl"]),
                       st.sampled_from(["list", "wrapped", "mapping"]), RANDOMS)


def test_valid_meddx_files_parse_completely():
    stats = Counter()

    @budget("meddx_valid")
    @given(MEDDX_CASE)
    def run(case):
        n, fmt, layout, rnd = case
        pairs = [meddx_record(rnd) for _ in range(n)]
        layout = layout if fmt == "json" else "list"
        ids = [f"ddx{i}" for i in range(n)] if layout == "mapping" else None
        data, _ = render_records(rnd, [r for r, _ in pairs], fmt, layout, ids)
        stats["examples"] += 1
        stats["valid"] += n
        qs, issues = parse_meddx_bytes(data)
        stats["parsed"] += len(qs)
        assert len(qs) + len(issues) == n
        if not issues:
            for q, (_, e) in zip(qs, pairs):
                assert (q.question, q.options, q.answer, q.meta["difficulty"]) == (
                    e["question"], e["options"], e["answer"], e["difficulty"])
                assert q.split in (("test",) if e["difficulty"] != "intermediate" else ("train", "validation"))
            assert [q.id for q in qs] == (ids or [f"meddx-{i}" for i in range(n)])

    run()
    RAN["meddx_valid"] = stats["examples"]
    SHARES["meddx_valid"] = (stats["valid"], stats["parsed"])
    assert stats["examples"] >= BUDGET["meddx_valid"]
    assert stats["parsed"] / stats["valid"] >= VALID_SHARE, stats


MUTATED_MEDDX_CASE = st.tuples(st.lists(st.none() | st.sampled_from(RECORD_MUTATIONS), min_size=1, max_size=5),
                               st.sampled_from(["json", "jsonl"]), st.none() | st.sampled_from(BYTE_MUTATIONS),
                               st.booleans(), RANDOMS)


def test_mutated_meddx_files_never_crash():
    stats = Counter()

    @budget("meddx_mutated")
    @given(MUTATED_MEDDX_CASE)
    def run(case):
        mutations, fmt, byte_mutation, raw_bytes, rnd = case
        if raw_bytes and byte_mutation is None:  # any bytes at all
            data = rnd.randbytes(rnd.randint(0, 100))
        else:
            records = [mutate_record(rnd, meddx_record(rnd)[0], how) if how else meddx_record(rnd)[0]
                       for how in mutations]
            data, _ = render_records(rnd, records, fmt)
            if byte_mutation:
                data, _ = mutate_bytes(rnd, data, byte_mutation)
        stats["examples"] += 1
        try:
            qs, issues = parse_meddx_bytes(data)
        except DatasetFileError:
            stats["file_errors"] += 1
            return
        _check_questions(qs)
        stats["skipped"] += len(issues)
        assert all(q.meta["difficulty"] in ("basic", "intermediate", "expert") for q in qs)

    run()
    RAN["meddx_mutated"] = stats["examples"]
    assert stats["examples"] >= BUDGET["meddx_mutated"]
    assert stats["skipped"] > 0 and stats["file_errors"] > 0


# ---- user vocabulary files -----------------------------------------------------------------
SYSTEM_SPELLINGS = {"ICD10CM": ["ICD10CM", "icd-10-cm", "ICD10"], "ICD9CM": ["ICD9CM", "icd9", "ICD-9-CM"],
                    "ICD9PCS": ["ICD9PCS", "icd9proc"], "ICD10PCS": ["ICD10PCS", "icd-10-pcs"], "ATC": ["ATC", "atc"],
                    "LOINC": ["LOINC", "loinc"]}
VOCAB_HEADER = ["code", "system", "description", "parents"]


def vocab_row(rnd: random.Random, system: str) -> tuple[dict, str]:
    """(row cells, the code_id it must become)."""
    canonical = canonical_code(rnd, system)
    raw = spelled(rnd, system, canonical).strip() if system in _RULES else canonical
    how = rnd.choice(["column", "prefix", "meds"])
    spelling = rnd.choice(SYSTEM_SPELLINGS[system])
    row = {"code": {"column": raw, "prefix": f"{spelling}:{raw}", "meds": f"{system}//{raw}"}[how],
           "system": spelling if how == "column" else "",
           "description": rpad(rnd, rtext(rnd, 30, newline=True)), "parents": ""}
    if system in _RULES and rnd.random() < 0.5:
        row["parents"] = f"{system}:{canonical_code(rnd, system)}"
    return row, f"{system}:{canonical}"


def write_vocab(rnd: random.Random, rows: list[dict], kind: str) -> tuple[bytes, str, list[int]]:
    """(file bytes, file name, byte offset where each row ends before compression)."""
    delimiter = "\t" if kind == "tsv" else ","
    lines = [_csv_line(VOCAB_HEADER, delimiter)] + [
        _csv_line([_marked(r.get(k, "")) for k in VOCAB_HEADER], delimiter) for r in rows]
    bom = rnd.random() < 0.3
    encoded = [line.encode("utf-8").replace(NOT_UTF8.encode(), b"\x80") for line in lines]
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(encoded)
    ends, pos = [], 3 if bom else 0
    for line in encoded:
        pos += len(line)
        ends.append(pos)
    name = {"csv": "codes.csv", "tsv": "codes.tsv", "gz": "codes.csv.gz"}[kind]
    return (gzip.compress(data, mtime=0) if kind == "gz" else data), name, ends[1:]


VOCAB_CASE = st.tuples(st.lists(st.sampled_from(CODE_SYSTEMS), min_size=1, max_size=8),
                       st.sampled_from(["csv", "tsv", "gz"]), RANDOMS)


def test_valid_vocabulary_files_keep_every_row():
    stats = Counter()

    @budget("vocab_valid")
    @given(VOCAB_CASE)
    def run(case):
        systems, kind, rnd = case
        pairs = [vocab_row(rnd, s) for s in systems]
        data, name, _ = write_vocab(rnd, [r for r, _ in pairs], kind)
        stats["examples"] += 1
        stats["valid"] += len(pairs)
        table, bad = parse_code_bytes(data, name)
        stats["parsed"] += len(table.codes)
        assert table.skipped == len(bad) and len(table.codes) + len(bad) == len(pairs)
        if not bad:
            assert list(table.codes["code_id"]) == [cid for _, cid in pairs]
            assert list(table.codes["description"]) == [r["description"].strip() for r, _ in pairs]

    run()
    RAN["vocab_valid"] = stats["examples"]
    SHARES["vocab_valid"] = (stats["valid"], stats["parsed"])
    assert stats["examples"] >= BUDGET["vocab_valid"]
    assert stats["parsed"] / stats["valid"] >= VALID_SHARE, stats


def _check_table(table, bad):
    assert table.skipped == len(bad)
    for b in bad:
        assert b.reason and b.row >= 0 and (b.line is None or b.line >= 1)
    for cid, system, code, desc in zip(table.codes["code_id"], table.codes["system"], table.codes["code"],
                                       table.codes["description"]):
        assert cid == f"{system}:{code}" and normalize_code(code, system) == code
        assert desc.strip() and desc.lower() != "nan"


VOCAB_MUTATIONS = ("empty_code", "bad_code", "no_desc", "nan_desc", "no_system", "odd", "huge")


def mutate_vocab_row(rnd: random.Random, row: dict, how: str) -> dict:
    row = dict(row)
    if how == "empty_code":
        row["code"] = ""
    elif how == "bad_code":
        row["code"] = rnd.choice(["11E9", "E1", "E11.99999", "X123", "A1", "foo-bar", "ICD10CM:", "E11\x00"])
        row["system"] = rnd.choice(["ICD10CM", "ICD9CM", "ATC", ""])
    elif how == "no_desc":
        row["description"] = rnd.choice(["", "   ", "\u2028"])
    elif how == "nan_desc":
        row["description"] = "NaN"
    elif how == "no_system":
        row["code"], row["system"] = rtext(rnd, 8).replace(":", "").replace("/", ""), ""
    elif how == "odd":
        row[rnd.choice(VOCAB_HEADER)] = rnd.choice(["\udc80", "\x00", "a\nb", 'x"y', "1" * 5000, "my sys", "a:b"])
    else:
        row["description"] = "z" * 140_000  # over the csv module's field limit
    return row


MUTATED_VOCAB_CASE = st.tuples(
    st.lists(st.tuples(st.sampled_from(CODE_SYSTEMS), st.none() | st.sampled_from(VOCAB_MUTATIONS)),
             min_size=1, max_size=6),
    st.none() | st.sampled_from(BYTE_MUTATIONS), RANDOMS)


def test_mutated_vocabulary_files_never_crash():
    stats = Counter()

    @budget("vocab_mutated")
    @given(MUTATED_VOCAB_CASE)
    def run(case):
        shapes, byte_mutation, rnd = case
        pairs = [vocab_row(rnd, system) for system, _ in shapes]
        rows = [mutate_vocab_row(rnd, r, how) if how else r for (r, _), (_, how) in zip(pairs, shapes)]
        data, name, ends = write_vocab(rnd, rows, "csv")
        raw, offset = mutate_bytes(rnd, data, byte_mutation) if byte_mutation else (data, len(data))
        stats["examples"] += 1
        try:
            table, bad = parse_code_bytes(raw, name)
        except CodeFileError as e:
            assert str(e)
            stats["file_errors"] += 1
            return
        _check_table(table, bad)
        stats["skipped"] += len(bad)
        # rows wholly before the first changed byte, and not mutated themselves, are kept
        kept = set(table.codes["code_id"])
        for i, end in enumerate(ends):
            if end <= offset and shapes[i][1] is None:
                assert pairs[i][1] in kept, (i, [str(b)[:80] for b in bad])

    run()
    RAN["vocab_mutated"] = stats["examples"]
    assert stats["examples"] >= BUDGET["vocab_mutated"]
    assert stats["skipped"] > 0 and stats["file_errors"] > 0


def test_arbitrary_bytes_as_a_vocabulary_file():
    stats = Counter()

    @budget("vocab_bytes")
    @given(st.sampled_from(["codes.csv", "codes.tsv", "codes.csv.gz", "codes.parquet"]),
           st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: ("code,description\n" + t).encode())))
    def run(name, raw):
        stats["examples"] += 1
        try:
            table, bad = parse_code_bytes(raw, name, system="LOINC")
        except CodeFileError:
            return
        _check_table(table, bad)

    run()
    RAN["vocab_bytes"] = stats["examples"]
    assert stats["examples"] >= BUDGET["vocab_bytes"]


PARQUET_COLUMNS = ("code", "system", "description", "parent_codes")
TYPED_CELLS = (None, float("nan"), 7, 4280, 1.5, True, ["a", "b"], [], "", "nan", "E11.9", "ICD10CM//E11.9")


def test_parquet_vocabulary_files_with_wrong_types():
    """MEDS `codes.parquet`: cells are typed (lists, numbers, nulls), not text."""
    stats = Counter()

    @budget("vocab_parquet")
    @given(st.lists(st.sampled_from(CODE_SYSTEMS), min_size=1, max_size=5),
           st.none() | st.tuples(st.sampled_from(PARQUET_COLUMNS), st.sampled_from(TYPED_CELLS)), RANDOMS)
    def run(systems, wrong, rnd):
        pairs = [vocab_row(rnd, system) for system in systems]
        rows = [{"code": r["code"], "system": r["system"], "description": r["description"],
                 "parent_codes": [p for p in r["parents"].split(";") if p]} for r, _ in pairs]
        if wrong is not None:  # one column of another type (a whole column: parquet columns are typed)
            for row in rows:
                row[wrong[0]] = wrong[1]
        buf = io.BytesIO()
        pd.DataFrame(rows).to_parquet(buf)
        stats["examples"] += 1
        table, bad = parse_code_bytes(buf.getvalue(), "codes.parquet")
        _check_table(table, bad)
        if wrong is None:
            stats["valid"] += len(pairs)
            stats["parsed"] += sum(cid in set(table.codes["code_id"]) for _, cid in pairs)

    run()
    RAN["vocab_parquet"] = stats["examples"]
    SHARES["vocab_parquet"] = (stats["valid"], stats["parsed"])
    assert stats["examples"] >= BUDGET["vocab_parquet"]
    assert stats["parsed"] / stats["valid"] >= VALID_SHARE, stats


def test_total_generated_inputs():
    """Runs last (file order): >= 10,000 generated inputs across the suite's parsers."""
    if set(RAN) != set(BUDGET):
        pytest.skip(f"only part of the file ran ({sorted(RAN)}); the total needs all of it")
    assert sum(RAN.values()) >= MIN_TOTAL, RAN
