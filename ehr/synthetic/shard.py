"""One shard of the synthetic cohort: the generative process of `ehr.synthetic.cohort` (see its
docstring), vectorised over the shard's patients with one loop over the stay index. Events
are built as integer arrays (subject, time in microseconds, code index into one string table,
value) and become a polars frame once, sorted by subject and time."""

from __future__ import annotations

import numpy as np
import polars as pl

from ehr.schema import SUBJECT_ID, conform_events
from ehr.synthetic.world import LABS, World

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Codes:
    """One string table for every code the generator writes; events hold int32 indices."""

    def __init__(self, w: World):
        markers = ["GENDER//F", "GENDER//M", "MEDS_BIRTH", "MEDS_DEATH", "HOSPITAL_ADMISSION//EMERGENCY",
                   "HOSPITAL_ADMISSION//ELECTIVE", "HOSPITAL_DISCHARGE//HOME", "HOSPITAL_DISCHARGE//DIED"]
        parts = [markers, list(w.dx_codes), list(w.px_codes), [f"MEDICATION//{n}" for n in w.drug_names],
                 [f"ATC:{c}" for c in w.drug_atc], [f"LAB//{n}" for n, *_ in LABS]]
        self.offset, acc = {}, 0
        for name, p in zip(["marker", "dx", "px", "med", "atc", "lab"], parts):
            self.offset[name] = acc
            acc += len(p)
        self.table = pl.Series("code", [c for p in parts for c in p], dtype=pl.String)
        self.marker = {m: i for i, m in enumerate(markers)}
        self.dx_cdf = np.cumsum(w.dx_prob)
        self.px_cdf = np.cumsum(w.px_prob) if len(w.px_prob) else None
        self.drug_cdf = np.cumsum(w.drug_prob)


def _draw(cdf: np.ndarray, rng, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), len(cdf) - 1)


class _Events:
    def __init__(self):
        self.s, self.t, self.c, self.v = [], [], [], []

    def add(self, subj, t, code, value=None):
        subj = np.asarray(subj)
        self.s.append(subj.astype(np.int64))
        self.t.append(np.broadcast_to(np.asarray(t, dtype=np.int64), subj.shape).copy())
        self.c.append(np.broadcast_to(np.asarray(code, dtype=np.int32), subj.shape).copy())
        self.v.append(np.full(subj.shape, np.nan, np.float32) if value is None else np.asarray(value, np.float32))


def _epoch_us(year: int) -> int:
    return int((np.datetime64(f"{year}-01-01", "us") - np.datetime64("1970-01-01", "us")).astype(np.int64))


def generate_shard(cfg, w: World, codes: Codes, shard: int, subject_ids: np.ndarray):
    """(events frame, truth frame, informative (subject_id, code index) pairs) for one shard."""
    rng = np.random.default_rng([cfg.seed, 1, shard])
    n = len(subject_ids)
    null = cfg.scenario == "null"
    ev = _Events()
    local = np.arange(n)
    male = rng.random(n) < 0.5
    u = rng.normal(size=n)
    minor = rng.random(n) < cfg.minor_fraction
    age0 = np.where(minor, rng.uniform(0, 18, n), np.clip(rng.normal(62, 17, n), 18, 95))
    t0 = _epoch_us(cfg.start_year) + (rng.random(n) * cfg.years * 365 * US_PER_DAY).astype(np.int64)
    birth = t0 - (age0 * 365.25 * US_PER_DAY).astype(np.int64)
    end = _epoch_us(cfg.start_year + cfg.years + 5)
    ev.add(local, 0, np.where(male, codes.marker["GENDER//M"], codes.marker["GENDER//F"]))   # static (time set null later)
    static_rows = n
    ev.add(local, birth, codes.marker["MEDS_BIRTH"])
    chronic = _draw(codes.dx_cdf, rng, n * cfg.chronic_codes).reshape(n, cfg.chronic_codes)
    htn = (chronic == w.hypertension_idx).any(axis=1)
    beta_all = w.dx_effect
    rms = float(np.sqrt(np.sum(w.dx_prob * beta_all ** 2)))
    chronic_z = np.zeros(n)
    if rms > 0:   # distinct chronic codes' effects, standardised
        srt = np.sort(chronic, axis=1)
        first = np.concatenate([np.ones((n, 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
        chronic_z = (beta_all[srt] * first).sum(axis=1) / (rms * np.sqrt(cfg.chronic_codes))
    k_planned = np.minimum(1 + rng.poisson(cfg.mean_extra_stays * np.exp(0.3 * u)), cfg.max_stays)
    alive = np.ones(n, bool)
    admit = t0.copy()
    score_sum, n_stays = np.zeros(n), np.zeros(n, np.int64)
    informative = []
    beta, dx_off = w.dx_effect, codes.offset["dx"]
    # sd of a stay's code score when its diagnoses are drawn by popularity: sqrt(n * E[beta^2])
    code_sd = float(np.sqrt(cfg.mean_dx * np.sum(w.dx_prob * beta ** 2)))
    for k in range(cfg.max_stays):
        act = np.flatnonzero(alive & (k < k_planned) & (admit < end))
        if not len(act):
            break
        m = len(act)
        age = (admit[act] - birth[act]) / (365.25 * US_PER_DAY)
        # diagnoses: chronic share from the patient's set, the rest by popularity
        ndx = 1 + rng.poisson(cfg.mean_dx - 1, m)
        owner = np.repeat(np.arange(m), ndx)
        from_chronic = rng.random(len(owner)) < cfg.chronic_share
        dx = _draw(codes.dx_cdf, rng, len(owner))
        dx[from_chronic] = chronic[act[owner[from_chronic]], rng.integers(0, cfg.chronic_codes, from_chronic.sum())]
        hist = np.where(n_stays[act] > 0, score_sum[act] / np.maximum(n_stays[act], 1), 0.0)
        onset_logit = -3.0 if null else -3.0 + 0.5 * hist + 0.02 * (age - 60)
        onset = ~htn[act] & (rng.random(m) < _sigmoid(onset_logit))
        htn[act[onset]] = True
        with_htn = np.flatnonzero(htn[act])
        owner = np.concatenate([owner, with_htn])
        dx = np.concatenate([dx, np.full(len(with_htn), w.hypertension_idx)])
        key = np.unique(owner.astype(np.int64) * len(w.dx_codes) + dx)
        owner, dx = key // len(w.dx_codes), key % len(w.dx_codes)
        r = np.bincount(owner, weights=beta[dx], minlength=m)
        # the code part: the patient's chronic score (persists across stays) and this stay's,
        # each scaled to unit variance, then times effect_scale
        z_code = (np.clip(0.7 * chronic_z[act] + 0.7 * r / code_sd, -4, 4) if code_sd > 0 else np.zeros(m))
        if null:   # nothing observable (codes, age, history length) predicts an outcome
            z = 0.5 * rng.normal(size=m)
        else:
            z = cfg.effect_scale * z_code + 0.5 * u[act] + 0.25 * (age - 60) / 15
        score_sum[act] += z_code
        n_stays[act] += 1
        inf = beta[dx] != 0
        informative.append(np.stack([subject_ids[act[owner[inf]]], dx[inf]], axis=1))
        los = np.maximum(np.exp(rng.normal(np.log(84) + 0.45 * z, 0.8)), 2.0)
        a = admit[act]
        d = a + (los * US_PER_HOUR).astype(np.int64)
        died = rng.random(m) < _sigmoid(-3.8 + 1.2 * z)
        draw = rng.random(m)
        # issue 22: the knowledge-graph / description scenarios plant an admission-type signal
        # (w.admission_effect > 0); every other scenario keeps the same draw against 0.2
        elective = draw < (_sigmoid(np.log(0.25) - w.admission_effect * z) if w.admission_effect else 0.2)
        ev.add(act, a, np.where(elective, codes.marker["HOSPITAL_ADMISSION//ELECTIVE"],
                                codes.marker["HOSPITAL_ADMISSION//EMERGENCY"]))
        ev.add(act[owner], d[owner], dx_off + dx)
        ev.add(act, d, np.where(died, codes.marker["HOSPITAL_DISCHARGE//DIED"], codes.marker["HOSPITAL_DISCHARGE//HOME"]))
        ev.add(act[died], d[died], codes.marker["MEDS_DEATH"])

        def in_stay(idx):   # uniform times inside the stay of each event's owner
            return a[idx] + (rng.random(len(idx)) * (d[idx] - a[idx])).astype(np.int64)

        # drugs: background substances + the five targets
        nd = rng.poisson(cfg.mean_drugs, m)
        do = np.repeat(np.arange(m), nd)
        drugs = _draw(codes.drug_cdf, rng, len(do))
        flags = {"infection": w.infection_mask, "circulatory": w.circulatory_mask, "lipid": w.lipid_mask}
        has = {name: np.bincount(owner, weights=mask[dx].astype(float), minlength=m) > 0 for name, mask in flags.items()}
        zc = z
        on = 0.0 if null else 1.0
        logits = {"vancomycin": -2.2 + 0.5 * zc + on * 2.0 * has["infection"],
                  "levofloxacin": -2.8 + 0.3 * zc + on * 1.5 * has["infection"],
                  "heparin": -0.7 + 0.3 * zc,
                  "metoprolol": -2.0 + on * 2.0 * has["circulatory"],
                  "atorvastatin": -2.5 + on * 2.5 * has["lipid"]}
        extra_o, extra_d = [do], [drugs]
        for name, lg in logits.items():
            give = np.flatnonzero(rng.random(m) < _sigmoid(lg))
            extra_o.append(give)
            extra_d.append(np.full(len(give), w.target_drug_idx[name]))
        do, drugs = np.concatenate(extra_o), np.concatenate(extra_d)
        td = in_stay(do)
        ev.add(act[do], td, codes.offset["med"] + drugs)
        if cfg.atc_events:
            ev.add(act[do], td, codes.offset["atc"] + drugs)
        if codes.px_cdf is not None:
            npx = rng.poisson(cfg.mean_px, m)
            po = np.repeat(np.arange(m), npx)
            ev.add(act[po], in_stay(po), codes.offset["px"] + _draw(codes.px_cdf, rng, len(po)))
        nl = rng.poisson(cfg.mean_labs, m)
        lo = np.repeat(np.arange(m), nl)
        lab = rng.integers(0, len(LABS), len(lo))
        mean = np.array([x[1] for x in LABS])[lab] + np.array([x[3] for x in LABS])[lab] * z[lo]
        value = rng.normal(mean, np.array([x[2] for x in LABS])[lab])
        ev.add(act[lo], in_stay(lo), codes.offset["lab"] + lab, value)
        # what comes next: death outside hospital, or the next admission
        gap = np.where(rng.random(m) < 0.04, rng.random(m) * 6 * US_PER_HOUR,
                       rng.exponential(150.0 * np.exp(-0.9 * z)) * US_PER_DAY).astype(np.int64) + 1
        last = k + 1 >= k_planned[act]
        p_out = np.where(last, _sigmoid(-2.0 + 0.5 * z), _sigmoid(-3.5 + 0.5 * z))
        dies_out = ~died & (rng.random(m) < p_out)
        t_death = d + (rng.random(m) * gap).astype(np.int64) + 1
        ev.add(act[dies_out], t_death[dies_out], codes.marker["MEDS_DEATH"])
        alive[act[died | dies_out]] = False
        admit[act] = d + gap
    s = np.concatenate(ev.s)
    t = np.concatenate(ev.t)
    c = np.concatenate(ev.c)
    v = np.concatenate(ev.v)
    is_static = np.zeros(len(s), bool)
    is_static[:static_rows] = True
    df = pl.DataFrame({SUBJECT_ID: subject_ids[s],
                       "time": pl.Series(t, dtype=pl.Int64).cast(pl.Datetime("us")),
                       "_c": c, "numeric_value": pl.Series(v, dtype=pl.Float32).fill_nan(None)})
    df = df.with_columns(pl.when(pl.Series(is_static)).then(None).otherwise(pl.col("time")).alias("time"))
    df = df.sort([SUBJECT_ID, "time", "_c"], nulls_last=False)
    df = df.with_columns(codes.table.gather(df["_c"]).alias("code")).drop("_c")
    events = conform_events(df.select(SUBJECT_ID, "time", "code", "numeric_value"))
    truth = pl.DataFrame({SUBJECT_ID: subject_ids, "frailty": u, "stays": n_stays,
                          "mean_code_score": np.where(n_stays > 0, score_sum / np.maximum(n_stays, 1), 0.0),
                          "hypertension": htn})
    inf = np.concatenate(informative) if informative else np.zeros((0, 2), np.int64)
    return events, truth, inf
