"""What every dataset loader shares: malformed-record reporting and answer resolution."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from qa.types import LETTERS, MCQuestion

log = logging.getLogger("qa.datasets")


@dataclass(frozen=True)
class ParseIssue:
    """A record that was skipped: its position in the source and why."""

    index: int
    reason: str

    def __str__(self) -> str:
        return f"record {self.index}: {self.reason}"


class MalformedRecord(ValueError):
    """Raised inside a parser for one record; the loader turns it into a ParseIssue."""


def report_issues(source: str, issues: list[ParseIssue], n_total: int) -> None:
    """Log every skipped record (index + reason) so nothing disappears silently."""
    if not issues:
        return
    log.warning("%s: skipped %d of %d malformed records", source, len(issues), n_total)
    for issue in issues:
        log.warning("%s: %s", source, issue)


_LETTER_RE = re.compile(r"^\s*\(?([A-Ja-j])\s*[\).:]?\s*$")


def parse_letter(value) -> str | None:
    """'C', 'c', '(C)', 'C.', 'C)' -> 'C'; anything else -> None."""
    if not isinstance(value, str):
        return None
    m = _LETTER_RE.match(value)
    return m.group(1).upper() if m else None


def resolve_answer(answer, options: list[str], *, index_base: int = 0) -> int:
    """Index of the correct option from a letter, an integer index (0- or 1-based per
    `index_base`) or the option text itself; raises MalformedRecord when it is none of them."""
    if answer is None or (isinstance(answer, float) and answer != answer):
        raise MalformedRecord("missing answer")
    if isinstance(answer, bool):
        raise MalformedRecord(f"answer {answer!r} is not a letter, index or option text")
    letter = parse_letter(answer)
    if letter is not None:
        k = LETTERS.index(letter)
        if k >= len(options):
            raise MalformedRecord(f"answer {letter!r} is not among the {len(options)} options")
        return k
    if isinstance(answer, (int, float)) or (isinstance(answer, str) and answer.strip().isdigit()):
        if isinstance(answer, float) and not answer.is_integer():
            raise MalformedRecord(f"answer index {answer!r} is not an integer")
        k = int(float(answer)) - index_base
        if not 0 <= k < len(options):
            raise MalformedRecord(f"answer index {answer!r} (base {index_base}) outside the {len(options)} options")
        return k
    if isinstance(answer, str):
        norm = answer.strip().casefold()
        hits = [i for i, o in enumerate(options) if str(o).strip().casefold() == norm]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise MalformedRecord(f"answer text {answer!r} matches several options")
        raise MalformedRecord(f"answer {answer!r} is not among the options")
    raise MalformedRecord(f"answer {answer!r} is not a letter, index or option text")


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by `key` (and `salt`): split assignment that does not depend on
    record order, Python's hash seed or the rest of the data."""
    h = hashlib.blake2b(f"{salt}\x00{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0 ** 64


def filter_split(questions: list[MCQuestion], split: str | None) -> list[MCQuestion]:
    if split in (None, "all"):
        return questions
    split = split.lower()
    keep = [q for q in questions if q.split == split or q.meta.get("difficulty") == split]
    if not keep and questions:
        known = sorted({q.split for q in questions} | {q.meta.get("difficulty") for q in questions} - {None})
        raise ValueError(f"no question has split/difficulty {split!r}; known: {known}")
    return keep
