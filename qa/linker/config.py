"""One dataclass configures the whole linker; it is saved as JSON beside the index.

On the project's JsonConfig: a config a user writes (`LinkerConfig.load`, `from_dict`) rejects
unknown keys; the config saved beside an index (`from_index`) may come from a newer version and
is loaded with a warning naming the keys it ignores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from medbase.jsonconfig import JsonConfig

# fields that change the built KB / index (and therefore its cache key); the others
# only change how mentions are found and scored and may differ between runs
BUILD_FIELDS = ("systems", "include_groups", "exclude_prefixes", "derived_aliases", "abbreviations",
                "gem_aliases", "extra_alias_files", "hnsw_m", "ef_construction")


@dataclass
class LinkerConfig(JsonConfig):
    """Knobs of the offline code linker.

    systems               code systems linked to (KB built over these only); default diagnoses
    include_groups        also link to grouping rows (3-character ICD categories); ranges never
    exclude_prefixes      code_id prefixes left out of the KB; default the ICD-10-CM external-cause
                          chapter (V00-Y99), whose titles ("Activity, unspecified", "Contact with
                          ...") turn everyday words into false links
    derived_aliases       add shortened names ("Pneumonia, unspecified organism" -> "pneumonia")
    abbreviations         add the curated abbreviation table (qa/linker/abbreviations.py)
    gem_aliases           add ICD-9-CM titles of codes that map onto a code (needs the CodeGraph)
    extra_alias_files     scispacy-format KB files (.json/.jsonl of Entity records, local paths)
                          whose concept_id is a code_id, e.g. ICD-10-CM synonyms from a local UMLS
    hnsw_m, ef_construction, index_threads   nmslib HNSW build parameters
    ef_search             HNSW efSearch when linking a mention (higher = closer to exact search)
    ef_search_windows     efSearch for the many candidate windows of the fuzzy mention path
    category_vote         weight of the neighbours' agreement on a 3-character category in the score
    spelling_correction   correct unknown words to the nearest KB word (edit distance 1, 2 for long)
    max_pattern_tokens    aliases longer than this are not exact-match patterns (still in the index)
    fuzzy_mentions        look for mentions in the text that no alias matched exactly
    fuzzy_threshold       TF-IDF cosine a fuzzy window needs to become a mention
    max_window            longest window (tokens) tried by the fuzzy path
    min_fuzzy_token_len   single-token fuzzy windows need at least this many characters
    k                     ANN neighbours per mention (scispacy EntityLinker `k`)
    threshold             minimum link score kept by `link`
    max_entities_per_mention  candidates kept per mention
    rerank                re-order a non-exact mention's candidates with the learned re-ranker
                          (qa/linker/rerank.py), fitted once per index on the KB's own synonyms
    rerank_queries        synonyms the re-ranker is fitted on
    phrase_mentions       grow each mention over its site / laterality / "with" words and link the whole
                          phrase by its words (qa/linker/phrases.py) when that explains more of the text
    phrase_min_cover      share of a grown phrase's word weight its code's alias must account for
    laterality            a side word in the mention picks the code's sibling for that side
    assignable_codes      a grouping row (C53, G43.1) becomes its default assignable code (C53.9, G43.109)
    mention_status        mark mentions negated / family / ruleout (qa/linker/context.py)
    mondo_synonyms        link MONDO labels mapped exactly to ICD-10-CM (shared kg/mondo; qa/linker/synonyms.py)
    hetionet_synonyms     link Hetionet disease names joined to ICD-10-CM through MONDO (shared kg/hetionet)
    lay_synonyms          link the curated lay names (qa/linker/synonyms.py LAY_TERMS)
    The last eight are runtime settings: an index built once serves every combination (ablations).
    """

    systems: tuple[str, ...] = ("ICD10CM",)
    include_groups: bool = True
    exclude_prefixes: tuple[str, ...] = ("ICD10CM:V", "ICD10CM:W", "ICD10CM:X", "ICD10CM:Y")
    derived_aliases: bool = True
    abbreviations: bool = True
    gem_aliases: bool = True
    extra_alias_files: tuple[str, ...] = ()
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 400
    ef_search_windows: int = 50
    index_threads: int = 2
    category_vote: float = 0.2
    spelling_correction: bool = True
    max_pattern_tokens: int = 8
    fuzzy_mentions: bool = True
    fuzzy_threshold: float = 0.8
    max_window: int = 3
    min_fuzzy_token_len: int = 5
    k: int = 30
    threshold: float = 0.7
    max_entities_per_mention: int = 5
    rerank: bool = True
    rerank_queries: int = 6000
    phrase_mentions: bool = True
    phrase_min_cover: float = 0.8
    laterality: bool = True
    assignable_codes: bool = True
    mention_status: bool = True
    mondo_synonyms: bool = True
    hetionet_synonyms: bool = True
    lay_synonyms: bool = True

    def __post_init__(self):
        self.systems = tuple(self.systems)
        self.extra_alias_files = tuple(str(p) for p in self.extra_alias_files)
        self.exclude_prefixes = tuple(self.exclude_prefixes)
        if not self.systems:
            raise ValueError("systems must name at least one code system")
        for name in ("hnsw_m", "ef_construction", "ef_search", "ef_search_windows", "index_threads", "max_pattern_tokens",
                     "max_window", "min_fuzzy_token_len", "k", "max_entities_per_mention", "rerank_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.category_vote < 0:
            raise ValueError(f"category_vote must be >= 0, got {self.category_vote}")
        for name in ("fuzzy_threshold", "threshold", "phrase_min_cover"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for p in self.extra_alias_files:
            if p.startswith(("http://", "https://", "s3://")):
                raise ValueError(f"extra_alias_files must be local paths (no network): {p}")

    def build_key(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in BUILD_FIELDS}

    @classmethod
    def from_index(cls, path: str | Path) -> "LinkerConfig":
        """The config saved beside an index (`config.json`): keys of a newer version are ignored
        with a warning."""
        return cls.load_saved(path)

    def with_overrides(self, **overrides) -> "LinkerConfig":
        """A copy with runtime `overrides` (None values ignored; a name that is no field is an
        error); validated again."""
        unknown = sorted(set(overrides) - self._known_keys())
        if unknown:
            raise ValueError(f"unknown LinkerConfig fields {unknown}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
