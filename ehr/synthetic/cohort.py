"""Synthetic EHR cohort with a documented generative process (MEDS events; says it is synthetic).

Use: `generate(SyntheticConfig(n_patients=1000, seed=0, scenario="hierarchy"))` -> a cohort
in memory, or `write_synthetic_meds(cfg, out_dir)` -> a MEDS directory written shard by shard
(bounded memory). Deterministic given the config (seed, sizes, shard size). The generator
never uses MedTok or any tokenizer: codes come from the project vocabulary's code table.

Generative process (per patient; vectorised over the patients of a shard, one loop over the
stay index):
1. sex ~ Bernoulli(0.5) (`GENDER//F|M`, static); a latent frailty u ~ N(0, 1) (not in the
   data); age at the first admission: minors (3%) U(0, 18), adults N(62, 17) clipped to
   [18, 95]; first admission uniform over `years` from 1 January `start_year`; `MEDS_BIRTH`.
2. a chronic set of `chronic_codes` ICD-10-CM codes drawn by popularity (see
   `ehr.synthetic.world`); planned stays K = 1 + Poisson(`mean_extra_stays` * exp(0.3 u)).
3. each stay: 1 + Poisson(`mean_dx` - 1) diagnoses, each from the chronic set with probability
   `chronic_share`, else by popularity; hypertension (ICD10CM:I10) once present recurs, and
   starts with probability sigmoid(-3 + 0.5 s + 0.02 (age - 60)) (sigmoid(-3) under `null`),
   where s is the patient's mean standardised code score so far. The stay's code score r = sum of the scenario effects beta_c over
   its distinct diagnoses (r = 0 under `null`), standardised by sd = sqrt(mean_dx * E[beta^2])
   (beta^2 averaged by code popularity); the patient's chronic score R = the effects of its
   distinct chronic codes, standardised the same way; outcome score
   z = effect_scale * clip(0.7 R + 0.7 r / sd, -4, 4) + 0.5 u + 0.25 (age - 60) / 15.
   R persists across stays (and its codes fill half of each stay's diagnoses), so earlier
   stays' codes carry signal for predictions made before this stay's diagnoses exist.
   Under `null`, z ~ N(0, 0.5^2) afresh for every stay: no code, age or history length
   predicts any outcome.
   - length of stay: exp(N(log 84 h + 0.45 z, 0.8)), at least 2 h;
   - in-hospital death ~ Bernoulli(sigmoid(-3.8 + 1.2 z)): `HOSPITAL_DISCHARGE//DIED` and
     `MEDS_DEATH` at the discharge; otherwise `HOSPITAL_DISCHARGE//HOME`;
   - drugs: Poisson(`mean_drugs`) substances by popularity plus the paper's five, each with
     its own model (vancomycin and levofloxacin more likely with an infection code,
     metoprolol with a circulatory code, atorvastatin with E78/I25, heparin with z; under
     `null` none depends on codes), as `MEDICATION//<name>` and `ATC:<code>` at a uniform time
     in the stay; procedures Poisson(`mean_px`) ICD-10-PCS codes and labs Poisson(`mean_labs`)
     `LAB//<name>` with numeric values shifted by z, at uniform times in the stay; diagnoses
     stamped at the discharge (as MIMIC);
   - next admission after a gap ~ Exp(mean 150 d * exp(-0.9 z)), 4% same-day transfers
     (0-6 h); after a stay a death outside hospital with probability sigmoid(-3.5 + 0.5 z)
     (sigmoid(-2 + 0.5 z) after the last planned stay) at a uniform time before the next
     admission would have been; stays stop at death or after `years` + 5 years.
4. splits: `ehr.splits.assign_splits` (hash of subject id and seed), made before any label.
Truth recorded per subject (`truth`): frailty, mean code score, the informative codes (beta
!= 0) it carries and, after all shards, how many train subjects carry each (`code_effects`
.train_subjects; truth.min_informative_train_subjects), so a benchmark can select "patients
whose informative codes are rare in training".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ehr import meds_io
from ehr.schema import SUBJECT_ID
from ehr.splits import DEFAULT_FRACTIONS, assign_splits
from ehr.synthetic.shard import Codes, generate_shard
from ehr.synthetic.world import SCENARIOS, World, get_world
from ehr.synthetic.world import load_code_table
from medbase.jsonconfig import JsonConfig


@dataclass
class SyntheticConfig(JsonConfig):
    n_patients: int = 1000
    seed: int = 0
    scenario: str = "hierarchy"
    subjects_per_shard: int = 10_000
    first_subject_id: int = 1
    mean_extra_stays: float = 1.5
    max_stays: int = 30
    mean_dx: float = 12.0
    mean_px: float = 2.0
    mean_drugs: float = 22.0
    mean_labs: float = 24.0
    atc_events: bool = True
    chronic_codes: int = 6
    chronic_share: float = 0.5
    effect_scale: float = 1.5
    minor_fraction: float = 0.03
    start_year: int = 2110
    years: int = 10
    split_fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    vocab_dir: str | None = None

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if self.n_patients < 1 or self.subjects_per_shard < 1:
            raise ValueError("n_patients and subjects_per_shard must be >= 1")
        if not 0 <= self.chronic_share <= 1 or not 0 <= self.minor_fraction <= 1:
            raise ValueError("chronic_share and minor_fraction must be in [0, 1]")


@dataclass
class SyntheticCohort:
    events: pl.DataFrame | None
    truth: pl.DataFrame          # per subject: split, frailty, stays, informative codes and their train counts
    code_effects: pl.DataFrame   # informative codes: effect, groups, train_subjects
    splits: pl.DataFrame
    meta: dict


def _subject_ids(cfg: SyntheticConfig) -> np.ndarray:
    return np.arange(cfg.first_subject_id, cfg.first_subject_id + cfg.n_patients, dtype=np.int64)


def _finish_truth(cfg, w: World, truths, infos, splits) -> tuple[pl.DataFrame, pl.DataFrame]:
    truth = pl.concat(truths).join(splits, on=SUBJECT_ID, how="left")
    pairs = np.unique(np.concatenate(infos), axis=0) if infos else np.zeros((0, 2), np.int64)
    inf = pl.DataFrame({SUBJECT_ID: pairs[:, 0], "code": w.dx_codes[pairs[:, 1]] if len(pairs) else []},
                       schema={SUBJECT_ID: pl.Int64, "code": pl.String}).join(splits, on=SUBJECT_ID, how="left")
    train_counts = (inf.filter(pl.col("split") == "train").group_by("code").agg(pl.len().alias("train_subjects")))
    effects = (pl.from_pandas(w.effects) if len(w.effects)
               else pl.DataFrame(schema={"code": pl.String, "effect": pl.Float64}))
    effects = (effects.join(train_counts, on="code", how="left")
               .with_columns(pl.col("train_subjects").fill_null(0).cast(pl.Int64)))
    per = (inf.join(effects.select("code", "train_subjects"), on="code", how="left")
           .group_by(SUBJECT_ID).agg(pl.col("code").alias("informative_codes"),
                                     pl.col("train_subjects").alias("informative_train_subjects"),
                                     pl.col("train_subjects").min().alias("min_informative_train_subjects")))
    truth = (truth.join(per, on=SUBJECT_ID, how="left")
             .with_columns(pl.col("informative_codes").list.len().fill_null(0).alias("n_informative"))
             .sort(SUBJECT_ID))
    return truth, effects


def dataset_meta(cfg: SyntheticConfig, w: World) -> dict:
    return {"synthetic": True, "generator": "ehr.synthetic.cohort", "scenario": cfg.scenario, "seed": cfg.seed,
            "config": cfg.to_dict(), "informative_codes": int(len(w.effects)),
            "note": "SYNTHETIC data: generated by ehr.synthetic.cohort, not patients"}


def generate(cfg: SyntheticConfig) -> SyntheticCohort:
    """The whole cohort in memory (events sorted by subject and time)."""
    w = get_world(cfg.seed, cfg.scenario, cfg.vocab_dir)
    codes = Codes(w)
    ids = _subject_ids(cfg)
    splits = assign_splits(ids, seed=cfg.seed, fractions=cfg.split_fractions)
    events, truths, infos = [], [], []
    for shard, lo in enumerate(range(0, len(ids), cfg.subjects_per_shard)):
        e, t, i = generate_shard(cfg, w, codes, shard, ids[lo:lo + cfg.subjects_per_shard])
        events.append(e), truths.append(t), infos.append(i)
    truth, effects = _finish_truth(cfg, w, truths, infos, splits)
    return SyntheticCohort(events=pl.concat(events), truth=truth, code_effects=effects, splits=splits,
                           meta=dataset_meta(cfg, w))


def write_synthetic_meds(cfg: SyntheticConfig, out_dir: str | Path, progress: bool = False) -> dict:
    """Generate shard by shard into a MEDS directory (data/<k>.parquet, metadata/...); the
    truth tables go to `synthetic/` beside it. Returns counts and timings."""
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "synthetic").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    w = get_world(cfg.seed, cfg.scenario, cfg.vocab_dir)
    codes = Codes(w)
    ids = _subject_ids(cfg)
    splits = assign_splits(ids, seed=cfg.seed, fractions=cfg.split_fractions)
    truths, infos, n_events, shards = [], [], 0, []
    starts = list(range(0, len(ids), cfg.subjects_per_shard))
    it = enumerate(starts)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=len(starts), desc="synthetic shards")
    seen_codes: set[str] = set()
    for shard, lo in it:
        e, t, i = generate_shard(cfg, w, codes, shard, ids[lo:lo + cfg.subjects_per_shard])
        path = out / "data" / f"{shard}.parquet"
        n_events += meds_io.write_shard(e, path)
        seen_codes.update(e["code"].unique().to_list())
        shards.append(str(path))
        truths.append(t), infos.append(i)
        del e
    t_gen = time.perf_counter() - t_start
    truth, effects = _finish_truth(cfg, w, truths, infos, splits)
    meds_io.write_splits(splits, out)
    meds_io.write_codes(code_metadata(sorted(seen_codes), cfg.vocab_dir), out)
    meta = dataset_meta(cfg, w)
    meds_io.write_dataset_json(out, f"synthetic-{cfg.scenario}", extra=meta)
    truth.write_parquet(out / "synthetic" / "truth.parquet")
    effects.write_parquet(out / "synthetic" / "code_effects.parquet")
    (out / "synthetic" / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    return {"events": n_events, "subjects": len(ids), "shards": shards, "seconds": time.perf_counter() - t_start,
            "generate_and_write_seconds": t_gen}


def code_metadata(codes: list[str], vocab_dir: str | None = None) -> pl.DataFrame:
    """MEDS codes.parquet rows: descriptions and parents from the vocabulary where the code is
    a vocabulary id, the code itself otherwise."""
    table = load_code_table(vocab_dir)
    desc = dict(zip(table["code_id"], table["description"]))
    parents = dict(zip(table["code_id"], table["parents"]))
    rows_desc, rows_par = [], []
    for c in codes:
        key = c if c in desc else ("ATC:" + c.split(":", 1)[1] if c.startswith("ATC:") else c)
        rows_desc.append(desc.get(key, c))
        rows_par.append(list(parents.get(key, [])))
    return pl.DataFrame({"code": codes, "description": rows_desc, "parent_codes": rows_par},
                        schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)})
