"""Turn `source.txt` (the hand-written sentences) into `dev.jsonl` and `test.jsonl`.

    python qa/linker/sentences/build.py          # rewrites dev.jsonl / test.jsonl, checks every code
    python qa/linker/sentences/build.py --check  # only checks that the JSONL files match source.txt

Every gold code must be a billable (leaf) ICD-10-CM code in the `simple_icd_10_cm` package. The
split is fixed by position: of every five sentences in file order, the first three go to dev and the
last two to test (60/40, each section of source.txt spread over both parts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATUS = {"": "affirmed", "+": "affirmed", "!": "negated", "fh:": "family", "ro:": "ruleout"}


def parse_item(item: str) -> dict:
    item = item.strip()
    prefix = next((p for p in ("fh:", "ro:", "+", "!") if item.startswith(p)), "")
    codes = [c.strip() for c in item[len(prefix):].split("/") if c.strip()]
    if not codes:
        raise ValueError(f"empty gold item {item!r}")
    return {"codes": codes, "categories": sorted({c[:3] for c in codes}), "status": STATUS[prefix],
            "required": prefix != "+"}


def parse_source(path: Path = HERE / "source.txt") -> list[dict]:
    records, section = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("# ---"):
                section = line[5:].strip()
            continue
        text, gold, tags = (part.strip() for part in line.split("||"))
        i = len(records)
        records.append({"id": f"s{i + 1:03d}", "split": "dev" if i % 5 < 3 else "test", "text": text,
                        "gold": [parse_item(g) for g in gold.split(";") if g.strip()],
                        "tags": tags.split(), "section": section})
    return records


def check_codes(records: list[dict]) -> list[str]:
    import simple_icd_10_cm as icd
    bad = []
    for r in records:
        for g in r["gold"]:
            for c in g["codes"]:
                if not (icd.is_valid_item(c) and icd.is_leaf(c)):
                    bad.append(f"{r['id']} {c}")
    return bad


def render(records: list[dict], split: str) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records if r["split"] == split)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    records = parse_source()
    bad = check_codes(records)
    if bad:
        print("not billable ICD-10-CM codes:", ", ".join(bad), file=sys.stderr)
        return 1
    texts = [r["text"] for r in records]
    if len(set(texts)) != len(texts):
        print("duplicate sentences", file=sys.stderr)
        return 1
    for split in ("dev", "test"):
        out = HERE / f"{split}.jsonl"
        text = render(records, split)
        if args.check:
            if out.read_text(encoding="utf-8") != text:
                print(f"{out} is out of date", file=sys.stderr)
                return 1
        else:
            out.write_text(text, encoding="utf-8")
        print(f"{split}: {text.count(chr(10))} sentences, sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
