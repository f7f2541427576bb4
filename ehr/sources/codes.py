"""Source codes -> project vocabulary ids, and drug names -> ingredient / ATC.

Diagnoses and procedures go through the project's own spelling rules
(`medtok.codes.normalize.normalize_code`, the rules `Vocabulary.normalize` applies) and are
looked up in the built code table. Each *distinct* source code is resolved once in Python
(MIMIC-IV has ~30k distinct ICD codes against hundreds of millions of events); events then
join the small mapping table, so the per-event work stays columnar.

Drugs: the ingredient is found by name against the vocabulary's ATC level-5 names (the WHO
INN spelling, e.g. "Heparin" B01AB01): the longest run of words in the source name that is
an ATC substance name, after a short table of US -> INN names (acetaminophen -> paracetamol,
albuterol -> salbutamol, ...). A name shared by several ATC codes (vancomycin: A07AA09,
J01XA01, S01AA28) takes the systemic one: local/topical groups (D, S, A01, A07A, C05, R01,
R02, G01, B02BC) last, then the anatomical main group in the order J B C L N H A M R G P V,
then the code; a name saying oral / PO / enema / rectal takes an intestinal anti-infective
code (A07A) when the substance has one (vancomycin oral liquid: A07AA09). The route column
is not used otherwise: an approximation.
The drug event keeps the source name (`MEDICATION//heparin sodium`, lower case); the
ingredient's ATC code is a separate event. Line flushes and lock solutions (name has "flush"
or "lock": "Heparin Flush (10 units/ml)", "Sodium Chloride 0.9% Flush") get no ATC event:
they are line care, not the drug given.
NDC -> ATC (fabkury/ndc_map, CC BY-NC-SA: non-commercial) is used only when a path is given.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import polars as pl

from ehr.schema import ATC_PREFIX, FAMILY_SYSTEM, MEDICATION_PREFIX, UNMAPPED_PREFIX
from medbase.paths import default_vocab_dir
from medtok.codes.normalize import make_code_id, normalize_code

MAIN_GROUP_ORDER = "JBCLNHAMRGPVDS"
LOCAL_ATC_PREFIXES = ("D", "S", "A01", "A07A", "C05", "R01", "R02", "G01", "B02BC")
# US adopted names and common EHR shorthands -> the ATC (INN) substance name
DRUG_SYNONYMS = {
    "acetaminophen": "paracetamol", "albuterol": "salbutamol", "aspirin": "acetylsalicylic acid",
    "dextrose": "glucose", "d5w": "glucose", "ns": "sodium chloride", "normal saline": "sodium chloride",
    "meperidine": "pethidine", "glyburide": "glibenclamide", "cyclosporine": "ciclosporin",
    "nitroglycerin": "glyceryl trinitrate", "vitamin k": "phytomenadione", "insulin": "insulin (human)",
    "levalbuterol": "levosalbutamol", "epoetin alfa": "epoetin alfa", "valproic acid": "valproic acid",
    "phytonadione": "phytomenadione", "senna": "senna glycosides", "torsemide": "torasemide",
    "sodium bicarb": "sodium bicarbonate",
}
MAX_NGRAM = 5
ENTERAL = re.compile(r"\b(oral|po|enema|rectal)\b", re.I)
NOT_A_DOSE = re.compile(r"\b(flush|lock)\b", re.I)


def _norm_name(s: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9+\-() ]", " ", s.lower()).split())


def _tokens(s: str) -> list[str]:
    return re.sub(r"[^a-z0-9+\-]", " ", s.lower()).split()


def drug_code(name: str) -> str:
    """`MEDICATION//<source name, lower case, single spaces>`."""
    return MEDICATION_PREFIX + " ".join(name.lower().split())


def atc_preference(code: str) -> tuple:
    local = code.startswith(LOCAL_ATC_PREFIXES)
    rank = MAIN_GROUP_ORDER.index(code[0]) if code[0] in MAIN_GROUP_ORDER else len(MAIN_GROUP_ORDER)
    return (local, rank, code)


def ndc11(expr: pl.Expr) -> pl.Expr:
    """An NDC as 11 digits: dashed 4-4-2 / 5-3-2 / 5-4-1 forms padded to 5-4-2; plain digit
    strings left-padded; "0", empty or non-numeric -> null."""
    s = expr.str.strip_chars()
    parts = s.str.split("-")
    dashed = (parts.list.get(0, null_on_oob=True).str.zfill(5) + parts.list.get(1, null_on_oob=True).str.zfill(4)
              + parts.list.get(2, null_on_oob=True).str.zfill(2))
    plain = s.str.zfill(11)
    out = pl.when(s.str.contains("-")).then(dashed).otherwise(plain)
    ok = out.str.contains(r"^[0-9]{11}$") & (out != "00000000000")
    return pl.when(ok).then(out).otherwise(None)


def load_ndc_atc(path: str | Path) -> pl.DataFrame:
    """NDC (11 digits) -> ATC level-5 rows from fabkury's ndc_map zip (opt-in only): one ATC
    code per ingredient of the product (the map lists every ATC class of an ingredient, e.g.
    heparin B01AB01, C05BA03, S01XA14: the systemic one is kept, as for names)."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.lower().endswith(".csv"))
            raw = zf.read(name)
    else:
        raw = path.read_bytes()
    df = pl.read_csv(io.BytesIO(raw), columns=["ndc", "in_name", "atc5"], infer_schema=False,
                     null_values=["NA", ""])
    df = (df.filter(pl.col("atc5").is_not_null())
          .select(ndc11(pl.col("ndc")).alias("ndc"), pl.col("in_name").fill_null(""),
                  pl.col("atc5").str.strip_chars().alias("atc"))
          .drop_nulls().unique())
    pref = {a: i for i, a in enumerate(sorted(df["atc"].unique().to_list(), key=atc_preference))}
    return (df.with_columns(pl.col("atc").replace_strict(pref, return_dtype=pl.Int64).alias("_p"))
            .sort("_p").group_by(["ndc", "in_name"], maintain_order=True).first()
            .select("ndc", "atc").unique().sort(["ndc", "atc"]))


class CodeResolver:
    """Source code -> vocabulary id, drug name -> ingredient / ATC, code metadata."""

    def __init__(self, codes: pl.DataFrame, ndc_atc: pl.DataFrame | None = None):
        need = {"code_id", "system", "code", "description", "parents"}
        if need - set(codes.columns):
            raise ValueError(f"code table lacks columns {sorted(need - set(codes.columns))}")
        self.codes = codes.select(sorted(need))
        self._ids = set(self.codes["code_id"].to_list())
        # NDC-derived ATC codes count only when they are vocabulary ids (coverage is honest)
        self.ndc_atc = None if ndc_atc is None else ndc_atc.filter(
            ("ATC:" + pl.col("atc")).is_in(list(self._ids)))
        atc = self.codes.filter((pl.col("system") == "ATC") & (pl.col("code").str.len_chars() == 7))
        index: dict[str, list[str]] = {}
        for code, desc in atc.select("code", "description").iter_rows():
            name = _norm_name(re.sub(r"\(.*?\)", "", desc)) if "(" in desc and "insulin" not in desc.lower() \
                else _norm_name(desc)
            if "," in desc or not name:
                continue   # "Heparin, combinations": not a single ingredient
            index.setdefault(name, []).append(code)
        self._atc_candidates = {n: sorted(c, key=atc_preference) for n, c in index.items()}
        self._atc_by_name = {n: c[0] for n, c in self._atc_candidates.items()}
        self._atc_name = {c: n for n, c in self._atc_by_name.items()}
        self._drug_cache: dict[str, tuple[str | None, str | None]] = {}

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_vocab_dir(cls, vocab_dir: str | Path | None = None, ndc_atc_path: str | Path | None = None):
        vdir = Path(vocab_dir) if vocab_dir else default_vocab_dir()
        path = vdir / "codes.parquet"
        if not path.exists():
            raise FileNotFoundError(f"no built vocabulary at {path}; run scripts/build_vocab.py first")
        codes = pl.read_parquet(path, columns=["code_id", "system", "code", "description", "parents"])
        return cls(codes, load_ndc_atc(ndc_atc_path) if ndc_atc_path else None)

    @classmethod
    def from_vocabulary(cls, vocab, ndc_atc_path: str | Path | None = None):
        """From a `medtok.codes.vocabulary.Vocabulary` (e.g. the toy one in tests)."""
        df = vocab.codes
        codes = pl.DataFrame({"code_id": df["code_id"].tolist(), "system": df["system"].tolist(),
                              "code": df["code"].tolist(), "description": df["description"].tolist(),
                              "parents": [list(p) for p in df["parents"]]},
                             schema={"code_id": pl.String, "system": pl.String, "code": pl.String,
                                     "description": pl.String, "parents": pl.List(pl.String)})
        return cls(codes, load_ndc_atc(ndc_atc_path) if ndc_atc_path else None)

    # ---- diagnoses / procedures -----------------------------------------------------
    def resolve_one(self, family: str, raw: str) -> str | None:
        if family == "other":    # an imported code kept as it is: resolved when it is a vocabulary id
            return raw if raw in self._ids else None
        system = FAMILY_SYSTEM.get(family)
        if system is None or system == "ATC" or raw is None:
            return None
        norm = normalize_code(raw, system)
        cid = make_code_id(system, norm) if norm else None
        return cid if cid in self._ids else None

    def code_table(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Distinct (`_family`, `_raw`) -> `code` (vocabulary id, or the unmapped spelling)
        and `_resolved`."""
        rows = pairs.select("_family", "_raw").unique().drop_nulls()
        fam, raw = rows["_family"].to_list(), rows["_raw"].to_list()
        ids = [self.resolve_one(f, r) for f, r in zip(fam, raw)]
        unmapped = [UNMAPPED_PREFIX[f] + r if f in UNMAPPED_PREFIX else r for f, r in zip(fam, raw)]
        return pl.DataFrame({"_family": fam, "_raw": raw,
                             "code": [i if i else u for i, u in zip(ids, unmapped)],
                             "_resolved": [i is not None for i in ids]},
                            schema={"_family": pl.String, "_raw": pl.String, "code": pl.String,
                                    "_resolved": pl.Boolean})

    # ---- drugs ----------------------------------------------------------------------
    def drug_ingredient(self, name: str) -> tuple[str | None, str | None]:
        """(ingredient name, ATC code) for a source drug name, or (None, None)."""
        if name in self._drug_cache:
            return self._drug_cache[name]
        toks = _tokens(name)
        found = (None, None)
        for n in range(min(MAX_NGRAM, len(toks)), 0, -1):
            for i in range(len(toks) - n + 1):
                gram = " ".join(toks[i:i + n])
                gram = DRUG_SYNONYMS.get(gram, gram)
                if gram in self._atc_by_name:
                    atc = self._atc_by_name[gram]
                    # an oral / rectal form of a drug that has an intestinal anti-infective
                    # code (vancomycin PO or enema: A07AA09, not J01XA01)
                    if ENTERAL.search(name):
                        atc = next((c for c in self._atc_candidates[gram] if c.startswith("A07A")), atc)
                    found = (re.sub(r"\s*\(.*\)$", "", gram), atc)
                    break
            if found[0]:
                break
        self._drug_cache[name] = found
        return found

    def drug_atc(self, name: str) -> str | None:
        """The ATC code id of a source drug name (None for flushes / lock solutions)."""
        if NOT_A_DOSE.search(name):
            return None
        atc = self.drug_ingredient(name)[1]
        return ATC_PREFIX + atc if atc else None

    def drug_table(self, names: pl.Series) -> pl.DataFrame:
        """Distinct source names -> `code` (MEDICATION//<name, lower case>), `atc`, and `_no_atc`
        (a flush / lock solution: no ATC event, not even from its NDC)."""
        uniq = names.drop_nulls().unique().to_list()
        return pl.DataFrame(
            {"_raw": uniq, "code": [drug_code(n) for n in uniq], "atc": [self.drug_atc(n) for n in uniq],
             "_no_atc": [bool(NOT_A_DOSE.search(n)) for n in uniq]},
            schema={"_raw": pl.String, "code": pl.String, "atc": pl.String, "_no_atc": pl.Boolean})

    # ---- metadata -------------------------------------------------------------------
    def metadata(self, codes: pl.Series) -> pl.DataFrame:
        """`code`, `description`, `parent_codes` for the distinct codes of a dataset."""
        df = pl.DataFrame({"code": codes.unique().sort()})
        vocab = self.codes.select(pl.col("code_id").alias("code"), pl.col("description").alias("_vd"),
                                  pl.col("parents").alias("_vp"))
        df = df.join(vocab, on="code", how="left")
        atc = [(self.drug_atc(c[len(MEDICATION_PREFIX):]) or "")[len(ATC_PREFIX):] or None
               if c.startswith(MEDICATION_PREFIX) else None for c in df["code"].to_list()]
        atc_desc = dict(self.codes.filter(pl.col("system") == "ATC").select("code", "description").iter_rows())
        fixed = {"MEDS_BIRTH": "Birth", "MEDS_DEATH": "Death", "GENDER//F": "Female", "GENDER//M": "Male"}
        desc, parents = [], []
        for code, vd, vp, a in zip(df["code"].to_list(), df["_vd"].to_list(), df["_vp"].to_list(), atc):
            if vd is not None:
                desc.append(vd), parents.append(list(vp or []))
            elif a is not None:
                desc.append(atc_desc.get(a)), parents.append([ATC_PREFIX + a])
            else:
                desc.append(fixed.get(code)), parents.append([])
        return pl.DataFrame({"code": df["code"], "description": desc, "parent_codes": parents},
                            schema={"code": pl.String, "description": pl.String,
                                    "parent_codes": pl.List(pl.String)})
