"""Hierarchy levels of a code, derived from the project vocabulary's parents.

Three levels per code, coarse to fine (the hierarchical-ICD paper's G0 / G1 / G2):

| system   | G0                         | G1                              | G2                                  |
|----------|----------------------------|---------------------------------|-------------------------------------|
| ICD10CM  | chapter (`ICD10CM:CH04`)   | block (`ICD10CM:E08-E13`)       | 3-character category (`ICD10CM:E11`) |
| ICD9CM   | chapter (`ICD9CM:240-279`) | block (`ICD9CM:249-259`)        | 3-digit category (`ICD9CM:250`)      |
| ICD10PCS | section (`ICD10PCS:0`)     | body system (`ICD10PCS:0D`)     | root operation (`ICD10PCS:0DT`)      |
| ICD9PCS  | chapter (`ICD9PCS:35-39`)  | 2-digit category (`ICD9PCS:38`) | 3-digit subcategory (`ICD9PCS:38.9`) |
| ATC      | anatomical group (`ATC:C`) | therapeutic (`ATC:C07`)         | pharmacological (`ATC:C07A`)         |

G0 is the root of the code's parent chain, G1 the node just below it, G2 the category node on
the chain (its code equals the code's category spelling). The vocabulary has no nodes for
ICD-9 procedure categories, so their G1/G2 come from the code's digits (keys that do not
exist as vocabulary rows, which is fine: a level key only names an embedding row).

The walk is cycle-safe: the built vocabulary has 39 ICD-10-CM single-category blocks that
are their category's parent and child at once (`ICD10CM:B10` <-> `ICD10CM:B10-B10`); there
the chapter is found by range (the chapter whose "(A00-B99)" range holds the category).
Codes of other systems (drugs by name, stay markers, CCS, ...) have no levels (None).
"""

from __future__ import annotations

import re

import numpy as np
from medtok.loading import load_vocabulary

LEVELS = ("G0", "G1", "G2")
HIER_SYSTEMS = ("ICD10CM", "ICD9CM", "ICD10PCS", "ICD9PCS", "ATC")
_RANGE = re.compile(r"([0-9A-Z]{3,4})-([0-9A-Z]{3,4})")


def _category(system: str, code: str) -> str:
    if system == "ICD10CM":
        return code[:3]
    return code.split(".")[0]          # ICD9CM: 250.00 -> 250, V45.81 -> V45, E880.9 -> E880


class Hierarchy:
    """`levels(code_ids) -> [n, 3]` object array of level keys (None where a level does not exist)."""

    def __init__(self, vocab):
        codes = vocab.codes
        self._parent = {cid: (ps[0] if len(ps) else None) for cid, ps in zip(codes["code_id"], codes["parents"])}
        self._chapters: dict[str, list[tuple[str, str, str]]] = {}   # system -> [(lo, hi, chapter id)]
        for cid, system, code, desc, ps in zip(codes["code_id"], codes["system"], codes["code"],
                                               codes["description"], codes["parents"]):
            if len(ps) == 0 and system in ("ICD10CM", "ICD9CM"):
                found = _RANGE.findall(code if "-" in code else str(desc))
                if found:   # the last range in a chapter title: "... (Q00-QA0)"
                    self._chapters.setdefault(system, []).append((found[-1][0], found[-1][1], cid))
        self._memo: dict[str, tuple] = {}

    def chain(self, code_id: str) -> tuple[list[str], bool]:
        """Ancestors-or-self, nearest first, and whether the walk reached a root (False: a cycle)."""
        out, seen = [code_id], {code_id}
        while True:
            p = self._parent.get(out[-1])
            if p is None:
                return out, True
            if p in seen:
                return out, False
            out.append(p)
            seen.add(p)

    def _chapter_by_range(self, system: str, cat: str) -> str | None:
        for lo, hi, cid in self._chapters.get(system, []):
            if len(lo) == len(cat) and lo <= cat <= hi:
                return cid
        return None

    def code_levels(self, code_id: str) -> tuple[str | None, str | None, str | None]:
        hit = self._memo.get(code_id)
        if hit is not None:
            return hit
        system, _, code = code_id.partition(":")
        if system not in HIER_SYSTEMS or code_id not in self._parent:
            out = (None, None, None)
        elif system == "ICD10PCS":
            out = (f"{system}:{code[:1]}", f"{system}:{code[:2]}" if len(code) >= 2 else None,
                   f"{system}:{code[:3]}" if len(code) >= 3 else None)
        else:
            chain, rooted = self.chain(code_id)
            if system == "ICD9PCS":
                digits = code.split(".")
                out = (chain[-1] if rooted and len(chain) > 1 else None,
                       f"{system}:{digits[0]}",
                       f"{system}:{digits[0]}.{digits[1][:1]}" if len(digits) > 1 and digits[1] else None)
            elif system == "ATC":
                top = chain[::-1]              # root first: C, C07, C07A, C07AB, C07AB02
                out = tuple(top[i] if i < len(top) else None for i in range(3))
            else:
                cat = _category(system, code)
                g2 = f"{system}:{cat}" if f"{system}:{cat}" in self._parent else None
                if rooted:
                    g0 = chain[-1]
                    g1 = chain[-2] if len(chain) >= 2 and "-" in chain[-2] else None
                else:   # a cycle (single-category block): chapter by range, block from the chain
                    g0 = self._chapter_by_range(system, cat)
                    g1 = next((c for c in chain if "-" in c.partition(":")[2]), None)
                if g0 == code_id:   # the code is itself a chapter
                    g1 = g2 = None
                out = (g0, g1, g2)
        self._memo[code_id] = out
        return out

    def levels(self, code_ids) -> np.ndarray:
        arr = np.empty((len(code_ids), 3), dtype=object)
        for i, c in enumerate(code_ids):
            arr[i] = self.code_levels(str(c))
        return arr


_CACHED: dict[str, Hierarchy] = {}


def default_hierarchy(vocab=None) -> Hierarchy:
    """The hierarchy of the built vocabulary (loaded once per process)."""
    if vocab is not None:
        return Hierarchy(vocab)
    if "default" not in _CACHED:

        v, _ = load_vocabulary()
        _CACHED["default"] = Hierarchy(v)
    return _CACHED["default"]
