"""Which codes a request is about: given explicitly (validated against the vocabulary) or found
in the question by the code linker.

Explicit codes skip the linker. Each is checked for syntax first (a short token of letters,
digits and `.:-_`), then normalised by `Vocabulary.normalize`, whose `UnknownCodeError` names
the nearest valid codes; the service turns that into a 400. Linked codes come in the order the
fine-tuning job gives them (`llm_adapter.data.link_questions`): codes mentioned in the stem
first, best-scored first, then those in the options.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass

from medtok.codes.vocabulary import UnknownCodeError

CODE_SYNTAX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_\-]*$")


class CodeError(ValueError):
    """A code in a request that is malformed or unknown (a client error)."""


@dataclass
class ResolvedCode:
    code_id: str
    description: str
    source: str                 # "request" or "linker"
    score: float | None = None  # linker score
    start: int | None = None    # character span of the mention in the linked text
    end: int | None = None
    mention: str | None = None
    in_prefix: bool = False     # became prefix tokens (known to the vectors, within max_codes)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("score",)}


class CodeResolver:
    def __init__(self, vocab, linker=None, max_code_chars: int = 40):
        self.vocab = vocab
        self.linker = linker
        self.max_code_chars = max_code_chars
        self._lock = threading.Lock()  # one spaCy pipeline: one caller at a time

    def _description(self, code_id: str) -> str:
        try:
            return str(self.vocab.description(code_id))
        except (KeyError, UnknownCodeError):
            return ""

    def explicit(self, codes: list[str]) -> list[ResolvedCode]:
        out, seen = [], set()
        for raw in codes:
            if not isinstance(raw, str) or not raw or len(raw) > self.max_code_chars or not CODE_SYNTAX.match(raw):
                shown = raw[:50] if isinstance(raw, str) else type(raw).__name__
                raise CodeError(f"malformed code {shown!r}: codes are letters, digits and '.:-_' "
                                f"(at most {self.max_code_chars} characters), e.g. 'ICD10CM:E11.9'")
            try:
                cid = self.vocab.normalize(raw)
            except UnknownCodeError as e:
                raise CodeError(str(e)) from None
            if cid not in seen:
                seen.add(cid)
                out.append(ResolvedCode(cid, self._description(cid), "request"))
        return out

    def link(self, question: str, options: list[str] | None = None) -> list[ResolvedCode]:
        """Codes the linker finds in the question (then the options); [] without a linker."""
        if self.linker is None:
            return []
        text = question if not options else question + "\n" + "\n".join(options)
        with self._lock:
            links = self.linker.link(text)
        # negated, family-history and rule-out mentions are not the patient's codes: not in the prefix
        links = [lc for lc in links if getattr(lc, "status", "affirmed") == "affirmed"]
        ranked = sorted(links, key=lambda lc: (lc.start >= len(question), -lc.score, lc.start))
        out, seen = [], set()
        for lc in ranked:
            if lc.code_id in seen:
                continue
            seen.add(lc.code_id)
            out.append(ResolvedCode(lc.code_id, lc.description or self._description(lc.code_id), "linker",
                                    round(float(lc.score), 4), int(lc.start), int(lc.end), lc.mention))
        return out
