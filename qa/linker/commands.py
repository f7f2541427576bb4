"""What `scripts/link_codes.py` does, as importable functions (the script only parses arguments).

Output contract: the functions return the text meant for stdout (a table, or JSON alone);
everything else (index building, re-ranker fitting, progress bars, skipped MedDDx records)
goes to stderr or the logging system, so `link_codes.py --json ... | jq` always parses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from qa.linker.config import LinkerConfig
from qa.linker.linker_eval import evaluate
from qa.linker.pipeline import CodeLinker, LinkedCode, load_linker_vocabulary
from qa.linker.sentence_eval import evaluate_sentences


def read_texts(texts: Iterable[str] = (), file: str | Path | None = None) -> list[str]:
    """`texts` plus the non-blank lines of `file` (one text per line)."""
    out = list(texts)
    if file is not None:
        out += [line.rstrip("\r\n") for line in Path(file).read_text(encoding="utf-8").split("\n") if line.strip()]
    return out


def config_from_args(systems: list[str] | None = None, threshold: float | None = None,
                     extra_aliases: Iterable[str] = (), overrides: dict | None = None) -> LinkerConfig:
    """A LinkerConfig from the CLI's options (unset options keep the defaults); `overrides`: other fields."""
    kw: dict = {k: v for k, v in (("systems", systems), ("threshold", threshold)) if v is not None}
    if extra_aliases:
        kw["extra_alias_files"] = tuple(extra_aliases)
    return LinkerConfig(**kw).with_overrides(**(overrides or {}))


def parse_overrides(pairs: Iterable[str] = ()) -> dict:
    """["lay_synonyms=false", "phrase_min_cover=0.7"] -> {"lay_synonyms": False, "phrase_min_cover": 0.7}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        low = value.strip().lower()
        if low in ("true", "false"):
            out[key.strip()] = low == "true"
        else:
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                out[key.strip()] = value
    return out


def open_linker(*, index_dir: str | Path | None = None, vocab_dir: str | Path | None = None,
                systems: list[str] | None = None, threshold: float | None = None, extra_aliases: Iterable[str] = (),
                rebuild: bool = False, index_root: str | Path | None = None, verbose: bool = True,
                overrides: dict | None = None) -> CodeLinker:
    """A built linker index (`index_dir`), or the cached / newly built one for `vocab_dir`
    (default: the project vocabulary) and the given settings. `overrides`: other LinkerConfig fields
    (runtime ones only with `index_dir`)."""
    if index_dir is not None:
        return CodeLinker.from_pretrained(index_dir, threshold=threshold, **(overrides or {}))
    config = config_from_args(systems, threshold, extra_aliases, overrides)
    vocab, graph = load_linker_vocabulary(vocab_dir)
    return CodeLinker.build(vocab, config, graph=graph, root=index_root, rebuild=rebuild, verbose=verbose)


def links_to_records(texts: list[str], results: list[list[LinkedCode]]) -> list[dict]:
    return [{"text": t, "codes": [c.to_dict() for c in r]} for t, r in zip(texts, results)]


def format_table(texts: list[str], results: list[list[LinkedCode]]) -> str:
    lines = []
    for t, r in zip(texts, results):
        lines.append(t)
        for c in r:
            lines.append(f"  [{c.start}:{c.end}] {c.mention!r:32} -> {c.code_id:16} {c.score:.3f}  {c.description}  "
                         f"({c.source}){'' if c.status == 'affirmed' else ' [' + c.status + ']'}")
        if not r:
            lines.append("  (no codes)")
    return "\n".join(lines)


def link_command(texts: list[str], *, as_json: bool = False, systems: list[str] | None = None,
                 **linker_kw) -> str:
    """Link `texts` and return the stdout text: JSON (`as_json`) or a readable table.
    `linker_kw` go to `open_linker` (index_dir, vocab_dir, threshold, extra_aliases, rebuild, ...)."""
    linker = open_linker(systems=systems, **linker_kw)
    results = linker.link_batch(texts, systems=systems, progress=len(texts) > 100)
    if as_json:
        return json.dumps(links_to_records(texts, results), indent=2)
    return format_table(texts, results)


def evaluate_command(*, vocab_dir: str | Path | None = None, systems: list[str] | None = None,
                     threshold: float | None = None, extra_aliases: Iterable[str] = (),
                     meddx: str | Path | None = None, heldout: bool = True, out: str | Path | None = None,
                     index_root: str | Path | None = None, overrides: dict | None = None) -> str:
    """Held-out alias accuracy, MedDDx coverage and throughput (qa.linker.linker_eval) as JSON text;
    `overrides`: other LinkerConfig fields (`--set`)."""
    vocab, graph = load_linker_vocabulary(vocab_dir)
    report = evaluate(vocab, config_from_args(systems, threshold, extra_aliases, overrides), graph=graph, meddx_path=meddx,
                      heldout=heldout, out=out, root=index_root)
    return json.dumps(report, indent=2, default=str)


def sentences_command(splits: Iterable[str] = ("dev",), *, details: bool = False, out: str | Path | None = None,
                      **linker_kw) -> str:
    """The end-to-end sentence-set figures (qa.linker.sentence_eval) of each split, as JSON text.
    `linker_kw` go to `open_linker` (index_dir, overrides, ...)."""
    linker = open_linker(**linker_kw)
    report: dict = {"config": linker.config.to_dict()}
    for split in splits:
        report[split] = evaluate_sentences(linker, split, details=details)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2, default=str))
    return json.dumps(report, indent=2, default=str)
