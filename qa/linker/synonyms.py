"""Synonym sources beyond the vocabulary's own names: MONDO labels, Hetionet disease names, a curated
lay list. Each yields (alias, ICD-10-CM code_id, source) triples and can be switched off in
`LinkerConfig` (`mondo_synonyms`, `hetionet_synonyms`, `lay_synonyms`).

mondo       MONDO disease labels whose MONDO term has a `skos:exactMatch` to an ICD-10-CM code in
            the shared MONDO SSSOM mappings (`kg/mondo/mondo_exactmatch_icd10cm.sssom.tsv.gz`).
            The files hold one label per MONDO term, no synonym lists.
hetionet    Hetionet v1.0 disease node names (`kg/hetionet/hetionet-v1.0-nodes.tsv.gz`), joined to
            MONDO by label as the project's KG join does (medtok/graph/external.py), then to
            ICD-10-CM through MONDO's exactMatch or hasDbXref rows.
lay         `LAY_TERMS` below: everyday names hand-curated for this project (issue 23), each with the
            ICD-10-CM code its ICD-10-CM Alphabetic Index entry or title gives. Written from common
            usage, not from the evaluation sentences.
The shared files are read from `$MEDTOK_SHARED_DATA` (medbase.paths); when absent those two sources
are empty. GEM ICD-9-CM titles, the fourth source, are added at index build time (`gem_aliases`).
"""

from __future__ import annotations

import csv
import gzip
from functools import lru_cache
from pathlib import Path

from medbase.paths import shared_data_path

# (lay term, ICD-10-CM code). Codes follow the ICD-10-CM index entry for the term (or its
# everyday meaning: "heart attack" = acute myocardial infarction, unspecified).
LAY_TERMS: tuple[tuple[str, str], ...] = (
    ("heart attack", "I21.9"), ("high blood pressure", "I10"), ("raised blood pressure", "I10"),
    ("low blood pressure", "I95.9"), ("sugar diabetes", "E11.9"),
    ("mini stroke", "G45.9"), ("mini-stroke", "G45.9"), ("stroke", "I63.9"), ("brain attack", "I63.9"),
    ("kidney stones", "N20.0"), ("kidney stone", "N20.0"), ("gallstones", "K80.20"), ("gall stones", "K80.20"),
    ("heartburn", "R12"), ("acid reflux", "K21.9"), ("pink eye", "H10.9"), ("shingles", "B02.9"),
    ("chickenpox", "B01.9"), ("chicken pox", "B01.9"), ("whooping cough", "A37.90"), ("strep throat", "J02.0"),
    ("cold sores", "B00.1"), ("cold sore", "B00.1"), ("fever blister", "B00.1"), ("athlete's foot", "B35.3"),
    ("hay fever", "J30.1"), ("lazy eye", "H53.009"), ("slipped disc", "M51.26"), ("slipped disk", "M51.26"),
    ("frozen shoulder", "M75.00"), ("tennis elbow", "M77.10"), ("golfer's elbow", "M77.00"),
    ("bed sore", "L89.90"), ("bedsore", "L89.90"), ("pressure sore", "L89.90"), ("black lung", "J60"),
    ("glandular fever", "B27.90"), ("kissing disease", "B27.90"),
    ("thinning bones", "M81.0"), ("brittle bones", "M81.0"), ("underactive thyroid", "E03.9"),
    ("overactive thyroid", "E05.90"), ("enlarged prostate", "N40.0"), ("hardening of the arteries", "I70.90"),
    ("blood clot in the lungs", "I26.99"), ("blood clot in the lung", "I26.99"), ("clot in the lung", "I26.99"),
    ("blood clot in the leg", "I82.409"), ("clot in the leg", "I82.409"), ("irregular heartbeat", "I49.9"),
    ("bladder infection", "N30.90"), ("water infection", "N39.0"), ("swimmer's ear", "H60.339"),
    ("piles", "K64.9"), ("ringworm", "B35.9"), ("head lice", "B85.0"), ("collapsed lung", "J93.9"),
    ("water on the knee", "M25.469"), ("crossed eyes", "H50.9"), ("weak bladder", "N39.3"),
    ("hives", "L50.9"), ("nettle rash", "L50.9"), ("german measles", "B06.9"), ("lockjaw", "A35"),
    ("stomach flu", "A08.4"), ("tummy bug", "A08.4"), ("the flu", "J11.1"), ("flu", "J11.1"),
    ("common cold", "J00"), ("head cold", "J00"), ("chest infection", "J22"), ("pins and needles", "R20.2"),
    ("fainting", "R55"), ("blackout", "R55"), ("dizzy spells", "R42"), ("short of breath", "R06.02"),
    ("shortness of breath", "R06.02"), ("chest pain", "R07.9"), ("belly pain", "R10.9"), ("tummy ache", "R10.9"),
    ("stomach ache", "R10.9"), ("back pain", "M54.9"), ("lower back pain", "M54.50"), ("low back pain", "M54.50"),
    ("bad back", "M54.9"), ("sore throat", "J02.9"), ("pink eye", "H10.9"), ("wear and tear arthritis", "M19.90"),
    ("ear infection", "H66.90"), ("middle ear infection", "H66.90"), ("sinus infection", "J32.9"),
    ("stomach ulcer", "K25.9"), ("bleeding stomach ulcer", "K25.4"), ("fatty liver", "K76.0"),
    ("yellow jaundice", "R17"), ("jaundice", "R17"), ("blood poisoning", "A41.9"), ("bloodstream infection", "A41.9"),
    ("hole in the heart", "Q21.10"), ("heart murmur", "R01.1"), ("enlarged heart", "I51.7"),
    ("weak heart", "I50.9"), ("heart failure", "I50.9"), ("fluid on the lungs", "J81.1"), ("water on the lungs", "J81.1"),
    ("bleeding on the brain", "I62.9"), ("brain bleed", "I62.9"), ("brain tumor", "D49.6"), ("brain tumour", "D49.6"),
    ("lung cancer", "C34.90"), ("breast cancer", "C50.919"), ("bowel cancer", "C18.9"), ("colon cancer", "C18.9"),
    ("skin cancer", "C44.90"), ("blood cancer", "C96.9"), ("womb cancer", "C55"), ("cancer of the womb", "C55"),
    ("water pills", "Z79.899"), ("spastic colon", "K58.9"), ("sugar in the urine", "R81"),
    ("high cholesterol", "E78.00"), ("high blood sugar", "R73.9"), ("low blood sugar", "E16.2"),
    ("low iron", "D50.9"), ("thin blood", "D68.9"), ("bone thinning", "M81.0"), ("runny nose", "J34.89"),
    ("pinched nerve", "G58.9"), ("trapped nerve", "G58.9"), ("cluster headache", "G44.009"),
    ("sick headache", "G43.909"), ("nosebleed", "R04.0"), ("nose bleed", "R04.0"), ("bunion", "M21.619"),
    ("hammer toe", "M20.40"), ("ingrown toenail", "L60.0"), ("warts", "B07.9"), ("verruca", "B07.0"),
    ("boil", "L02.92"), ("pimples", "L70.0"), ("dandruff", "L21.0"), ("cradle cap", "L21.0"),
    ("nappy rash", "L22"), ("diaper rash", "L22"), ("prickly heat", "L74.0"), ("sunburn", "L55.9"),
    ("frostbite", "T33.90XA"), ("motion sickness", "T75.3XXA"), ("sea sickness", "T75.3XXA"),
    ("morning sickness", "O21.0"), ("miscarriage", "O03.9"), ("tubal pregnancy", "O00.109"),
    ("baby blues", "O90.6"), ("change of life", "N95.1"), ("hot flashes", "N95.1"),
    ("lazy bowel", "K59.09"), ("constipation", "K59.00"), ("the runs", "R19.7"), ("loose stools", "R19.7"),
    ("throwing up", "R11.10"), ("bedwetting", "N39.44"), ("bed wetting", "N39.44"), ("sleep apnoea", "G47.30"),
    ("manic depression", "F31.9"), ("nervous breakdown", "F48.8"), ("panic attacks", "F41.0"),
    ("eating disorder", "F50.9"), ("drinking problem", "F10.10"), ("alcoholism", "F10.20"),
    ("smoker's cough", "J41.0"), ("wheezing", "R06.2"),
)


def _read_tsv_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t"))


def _icd10cm(object_id: str) -> str | None:
    """'ICD10CM:E30.1' -> 'ICD10CM:E30.1'; ranges ('I00-I99') and other systems -> None."""
    if not isinstance(object_id, str) or not object_id.startswith("ICD10CM:") or "-" in object_id:
        return None
    return object_id


@lru_cache(maxsize=4)
def _mondo_rows(directory: str) -> tuple[tuple[str, str, str, str], ...]:
    """(mondo_id, label, icd10cm code_id, predicate) of the exact and dbxref ICD-10-CM files."""
    out = []
    for name, pred in (("mondo_exactmatch_icd10cm.sssom.tsv.gz", "exact"),
                       ("mondo_hasdbxref_icd10cm.sssom.tsv.gz", "dbxref")):
        path = Path(directory) / name
        if not path.exists():
            continue
        for r in _read_tsv_gz(path):
            cid = _icd10cm(r.get("object_id"))
            if cid and r.get("subject_label"):
                out.append((r["subject_id"], r["subject_label"], cid, pred))
    return tuple(out)


def mondo_synonyms(directory: str | Path | None = None) -> list[tuple[str, str, str]]:
    """(MONDO label, ICD-10-CM code_id, "mondo") for every exactMatch row."""
    d = Path(directory) if directory else shared_data_path("kg", "mondo")
    if d is None or not Path(d).exists():
        return []
    return sorted({(label, cid, "mondo") for _, label, cid, pred in _mondo_rows(str(d)) if pred == "exact"})


def hetionet_synonyms(hetionet_dir: str | Path | None = None, mondo_dir: str | Path | None = None
                      ) -> list[tuple[str, str, str]]:
    """(Hetionet disease name, ICD-10-CM code_id, "hetionet"): disease nodes whose name is a MONDO label
    (the project's Hetionet-MONDO join), through that term's exact or dbxref ICD-10-CM rows."""
    h = Path(hetionet_dir) if hetionet_dir else shared_data_path("kg", "hetionet")
    m = Path(mondo_dir) if mondo_dir else shared_data_path("kg", "mondo")
    if h is None or m is None or not Path(h).exists() or not Path(m).exists():
        return []
    nodes = next(Path(h).glob("*nodes.tsv*"), None)
    if nodes is None:
        return []
    by_label: dict[str, set[str]] = {}
    for _, label, cid, _ in _mondo_rows(str(m)):
        by_label.setdefault(label.lower(), set()).add(cid)
    out = set()
    for r in _read_tsv_gz(nodes):
        if r.get("kind") == "Disease":
            for cid in by_label.get(r["name"].lower(), ()):
                out.add((r["name"], cid, "hetionet"))
    return sorted(out)


def lay_synonyms() -> list[tuple[str, str, str]]:
    return sorted({(term, f"ICD10CM:{code}", "lay") for term, code in LAY_TERMS})


def synonym_triples(mondo: bool = True, hetionet: bool = True, lay: bool = True) -> list[tuple[str, str, str]]:
    """All switched-on sources, (alias, code_id, source), deduplicated on (alias, code_id) keeping the first source."""
    seen: dict[tuple[str, str], str] = {}
    for on, fn in ((lay, lay_synonyms), (mondo, mondo_synonyms), (hetionet, hetionet_synonyms)):
        if on:
            for alias, cid, src in fn():
                seen.setdefault((" ".join(alias.lower().split()), cid), src)
    return sorted((a, c, s) for (a, c), s in seen.items())
