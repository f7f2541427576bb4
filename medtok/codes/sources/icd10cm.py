"""ICD-10-CM: the full tabular tree (chapters, blocks, categories, subcategories) from
`simple-icd-10-cm` (April 2026 release), with inclusion terms as synonyms."""

from __future__ import annotations

from collections import Counter

from medtok.codes.sources.base import SourceTable, rows_frame

SYSTEM = "ICD10CM"


def chapter_code(ch: str) -> str:
    return f"CH{int(ch):02d}"


def load_icd10cm() -> SourceTable:
    import simple_icd_10_cm as cm

    rows, seen = [], set()
    all_codes = cm.get_all_codes(True)
    # a block holding a single category shares its name (e.g. block "B10" > category "B10");
    # the list yields the block first: call it "B10-B10" so both nodes keep distinct ids
    repeated = {c for c, n in Counter(all_codes).items() if n > 1}
    for code in all_codes:
        if cm.is_chapter(code):
            cid, kind = chapter_code(code), "group"
        elif code in repeated and code not in seen:
            cid, kind = f"{code}-{code}", "group"
        else:
            cid, kind = code, ("code" if cm.is_leaf(code) else "group")
        block_occurrence = code in repeated and code not in seen
        # the block occurrence must hang under the chapter: plain get_parent(code) answers for
        # the category (i.e. the block itself), which made a 2-cycle block <-> category
        parent = cm.get_parent(code, prioritize_blocks=True) if block_occurrence else cm.get_parent(code)
        if code in repeated and code in seen:
            parent = f"{code}-{code}"
        elif parent:
            parent = chapter_code(parent) if cm.is_chapter(parent) else parent
        seen.add(code)
        rows.append(dict(code_id=f"{SYSTEM}:{cid}", system=SYSTEM, code=cid,
                         description=cm.get_description(code).strip(),
                         parents=[f"{SYSTEM}:{parent}"] if parent else [],
                         synonyms=[t.strip() for t in cm.get_inclusion_term(code) if t.strip()],
                         kind=kind))
    return SourceTable("ICD10CM", rows_frame(rows))
