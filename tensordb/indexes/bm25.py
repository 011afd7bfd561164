"""BM25 indexes: per term, the entries that hold it and their BM25 scores, plus a word list for substrings.

The scores are bm25s's eager BM25 (Lucene's variant: ``idf(t) * tf / (tf + k1 * (1 - b + b * len / avglen))``
with ``idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))``), kept as a compressed sparse column matrix:
``indptr[t]:indptr[t + 1]`` are term ``t``'s entries and scores. A query's scores are the sums of
its terms' columns. The matrix is computed here with whole-array numpy steps, where bm25s's
builder loops over documents in Python; the tests hold the two to the same scores.

Rows added after the build are scored by a :class:`FreshSegment` with the index's own
statistics (its ``N``, ``df`` and average length), and the fresh rows' own counts for a
term the index has never seen, so a fresh row ranks as it would had it been indexed.

The index also lists which entries hold each lower-cased *word* (before stop words
and stemming), so ``contains`` and ``LIKE`` can skip rows that cannot match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import msgpack
import numpy as np

from ..errors import DataCorruptionError, IndexDefinitionError
from .text import ANALYZER_PARAMS, Analyzer, analyzer_params

SCORING_PARAMS = {"k1": 1.5, "b": 0.75}
#: Word characters, as the default token pattern sees them.
WORD_RUN = re.compile(r"\w+")


def bm25_params(tensor: str, htype: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A bm25 index's parameters, checked and completed; ``IndexDefinitionError`` for anything wrong."""
    if htype != "text":
        raise IndexDefinitionError(f"tensor {tensor!r}: a bm25 index needs a text tensor, got htype {htype!r}")
    unknown = sorted(set(params) - set(ANALYZER_PARAMS) - set(SCORING_PARAMS))
    if unknown:
        raise IndexDefinitionError(
            f"tensor {tensor!r}: unknown bm25 index parameter(s) {unknown}; "
            f"expected some of {sorted(ANALYZER_PARAMS + tuple(SCORING_PARAMS))}"
        )
    scoring = {}
    for name, default in SCORING_PARAMS.items():
        value = params.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise IndexDefinitionError(f"tensor {tensor!r}: {name} must be a number >= 0, got {value!r}")
        scoring[name] = float(value)
    if scoring["b"] > 1:
        raise IndexDefinitionError(f"tensor {tensor!r}: b must lie in [0, 1], got {scoring['b']}")
    return {**analyzer_params(tensor, params), **scoring}


@dataclass(frozen=True)
class Postings:
    """A sparse column matrix: for each key (a term or a word), the entries holding it, ascending, and a value."""

    keys: list[str]
    indptr: np.ndarray  # int64, len(keys) + 1
    entries: np.ndarray  # int32
    values: np.ndarray  # float32 (scores, or term counts)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_ids", {k: i for i, k in enumerate(self.keys)})

    def column(self, key_id: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[key_id], self.indptr[key_id + 1]
        return self.entries[lo:hi], self.values[lo:hi]

    def frequency(self, key_id: int) -> int:
        """How many entries hold the key."""
        return int(self.indptr[key_id + 1] - self.indptr[key_id])


def key_ids(docs: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The distinct keys of ``docs`` (in first-seen order), every key occurrence's id, and its doc."""
    distinct = list(dict.fromkeys(chain.from_iterable(docs)))
    ids = {key: i for i, key in enumerate(distinct)}
    lengths = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
    flat = np.fromiter(map(ids.__getitem__, chain.from_iterable(docs)), dtype=np.int64, count=int(lengths.sum()))
    return distinct, flat, np.repeat(np.arange(len(docs), dtype=np.int64), lengths)


def count_postings(keys: list[str], flat: np.ndarray, doc_of: np.ndarray, docs: int) -> Postings:
    """How often each key (ids ``flat``) occurs in each doc, as postings."""
    pairs, counts = np.unique(flat * max(docs, 1) + doc_of, return_counts=True)
    key_of, entries = np.divmod(pairs, max(docs, 1))
    indptr = np.searchsorted(key_of, np.arange(len(keys) + 1)).astype(np.int64)
    return Postings(keys, indptr, entries.astype(np.int32), counts.astype(np.float32))


class Bm25Index:
    """A searchable BM25 index over ``entries`` texts."""

    def __init__(self, params: Mapping[str, Any], entries: int, average_length: float, terms: Postings,
                 words: Postings) -> None:
        self.params = dict(params)  # what it was built with
        self.analyzer = Analyzer({k: params[k] for k in ANALYZER_PARAMS})
        self.k1, self.b = float(params["k1"]), float(params["b"])
        self.entries, self.average_length = entries, average_length
        self.terms, self.words = terms, words

    @classmethod
    def build(cls, params: Mapping[str, Any], texts: Sequence[Any]) -> Bm25Index:
        """The index of ``texts`` (None and other non-text values hold no terms)."""
        analyzer = Analyzer({k: params[k] for k in ANALYZER_PARAMS})
        words, word_ids, doc_of = key_ids([analyzer.words(t) if isinstance(t, str) else [] for t in texts])
        presence = count_postings(words, word_ids, doc_of, len(texts))
        presence = Postings(words, presence.indptr, presence.entries, np.empty(0, dtype=np.float32))
        # Each distinct word is analysed once; its occurrences then map to terms in one gather.
        term_of_word = analyzer.term_map(words)
        terms = list(dict.fromkeys(t for t in term_of_word.values() if t is not None))
        term_ids = {t: i for i, t in enumerate(terms)}
        term_id_of_word = np.array([term_ids.get(term_of_word[w], -1) for w in words] or [-1], dtype=np.int64)
        occurrences = term_id_of_word[word_ids] if len(word_ids) else word_ids
        kept = occurrences >= 0
        occurrences, doc_of = occurrences[kept], doc_of[kept]
        lengths = np.bincount(doc_of, minlength=len(texts))
        average = float(lengths.mean()) if len(texts) else 0.0
        counts = count_postings(terms, occurrences, doc_of, len(texts))
        return cls(params, len(texts), average, _scored(counts, lengths, average, params), presence)

    # -- searching -----------------------------------------------------------------------------------
    def query_terms(self, text: str) -> list[str]:
        """A query text's terms, analysed as the indexed texts were."""
        return self.analyzer.terms(text)

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        """Each entry's BM25 score for a query's terms (a repeated term counts each time)."""
        columns = [self.terms.column(i) for i in (self.terms.key_ids.get(t) for t in terms) if i is not None]
        if not columns:
            return np.zeros(self.entries, dtype=np.float64)
        entries = np.concatenate([c[0] for c in columns])
        weights = np.concatenate([c[1] for c in columns])
        return np.bincount(entries, weights=weights, minlength=self.entries)

    def idf(self, term: str, fresh: FreshSegment) -> float:
        """A term's idf: from the index when it holds the term, else from the fresh rows beside it."""
        term_id = self.terms.key_ids.get(term)
        if term_id is not None:
            return _idf(self.terms.frequency(term_id), self.entries)
        fresh_id = fresh.terms.key_ids.get(term)
        frequency = 0 if fresh_id is None else fresh.terms.frequency(fresh_id)
        return _idf(frequency, self.entries + fresh.docs)

    def fresh_scores(self, terms: Sequence[str], fresh: FreshSegment) -> np.ndarray:
        """BM25 scores of the fresh rows, with this index's statistics (one per fresh row)."""
        out = np.zeros(fresh.docs, dtype=np.float64)
        average = self.average_length if self.entries else fresh.average_length
        for term in terms:
            term_id = fresh.terms.key_ids.get(term)
            if term_id is None:
                continue
            docs, counts = fresh.terms.column(term_id)
            # Rounded as the index stores its scores, so a fresh row ties with its indexed twin.
            term_scores = _bm25(self.idf(term, fresh), counts, fresh.lengths[docs], average, self.k1, self.b)
            out[docs] += term_scores.astype(np.float32)
        return out

    def substring_entries(self, needle: str) -> np.ndarray | None:
        """A mask of the entries whose text may contain ``needle``; None when the word list cannot tell.

        Each run of word characters in ``needle`` (two or more) must be part of a word of the text:
        the word itself when the needle has non-word characters on both its sides, a word ending
        with it at the needle's start, beginning with it at the end, or holding it when it is the
        whole needle. Only an ASCII needle is looked up: lower-casing keeps its matches in place.
        """
        if not (self.analyzer.default_pattern and needle.isascii()):
            return None
        text = needle.lower() if self.analyzer.lowercase else needle
        mask = None
        for run in WORD_RUN.finditer(text):
            word = run.group()
            at_start, at_end = run.start() == 0, run.end() == len(text)
            if len(word) < 2:
                continue
            if not (at_start or at_end):
                matching = [self.words.key_ids[word]] if word in self.words.key_ids else []
            else:
                test = _word_test(word, at_start, at_end)
                matching = [i for i, w in enumerate(self.words.keys) if test(w)]
            found = np.zeros(self.entries, dtype=bool)
            for i in matching:
                found[self.words.column(i)[0]] = True
            mask = found if mask is None else mask & found
        return mask

    # -- the index file ------------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Header fields and arrays for the index file (the key lists as msgpack)."""
        arrays: dict[str, np.ndarray] = {}
        for name, postings in (("terms", self.terms), ("words", self.words)):
            arrays[f"{name}_keys"] = np.frombuffer(msgpack.packb(postings.keys, use_bin_type=True), dtype=np.uint8)
            arrays[f"{name}_indptr"] = postings.indptr
            arrays[f"{name}_entries"] = postings.entries
        arrays["terms_scores"] = self.terms.values
        return {"average_length": self.average_length}, arrays

    @classmethod
    def from_arrays(cls, params: Mapping[str, Any], payload: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                    entries: int, what: str) -> Bm25Index:
        """The index a file holds; ``DataCorruptionError`` naming ``what`` unless every array is consistent."""
        try:
            average = payload["average_length"]
            if isinstance(average, bool) or not isinstance(average, (int, float)) or not 0 <= average < math.inf:
                raise ValueError(f"average_length is {average!r:.40}")
            terms = _postings("terms", arrays, arrays["terms_scores"], entries)
            words = _postings("words", arrays, np.empty(0, dtype=np.float32), entries)
            if not np.all(np.isfinite(terms.values)):
                raise ValueError("a term score is not finite")
            checked = {**params, **bm25_params("(index file)", "text", params)}
        except (KeyError, TypeError, ValueError, IndexDefinitionError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError) as e:
            raise DataCorruptionError(f"{what}: bm25 index is malformed: {type(e).__name__}: {e}") from e
        return cls(checked, entries, float(average), terms, words)


def _postings(name: str, arrays: Mapping[str, np.ndarray], values: np.ndarray, entries: int) -> Postings:
    keys = msgpack.unpackb(arrays[f"{name}_keys"].tobytes(), raw=False)
    indptr, held = arrays[f"{name}_indptr"], arrays[f"{name}_entries"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise TypeError(f"{name}: the key list is not a list of distinct strings")
    if indptr.dtype.kind not in "iu" or held.dtype.kind not in "iu" or indptr.shape != (len(keys) + 1,):
        raise ValueError(f"{name}: {indptr.shape} {indptr.dtype} pointers for {len(keys)} keys")
    if held.ndim != 1 or indptr[0] != 0 or indptr[-1] != len(held) or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name}: the pointers do not partition the {len(held)} entries")
    if len(held) and (int(held.min()) < 0 or int(held.max()) >= entries):
        raise ValueError(f"{name}: an entry lies outside the index's {entries}")
    if len(values) not in (0, len(held)) or values.dtype.kind != "f":
        raise ValueError(f"{name}: {len(values)} {values.dtype} values for {len(held)} entries")
    return Postings(keys, indptr.astype(np.int64), held.astype(np.int32), values.astype(np.float32))


def _word_test(run: str, at_start: bool, at_end: bool) -> Any:
    """Whether a word of the text can hold a needle's ``run`` that touches the needle's start and/or end."""
    if at_start and at_end:
        return lambda word: run in word
    if at_start:
        return lambda word: word.endswith(run)
    return lambda word: word.startswith(run)


def _scored(counts: Postings, lengths: np.ndarray, average: float, params: Mapping[str, Any]) -> Postings:
    """Term counts turned into BM25 scores (``lengths``: each entry's number of terms)."""
    k1, b = float(params["k1"]), float(params["b"])
    docs = len(lengths)
    frequency = np.diff(counts.indptr).astype(np.float64)
    idf = np.log(1 + (docs - frequency + 0.5) / (frequency + 0.5))
    term_of = np.repeat(np.arange(len(counts.keys)), np.diff(counts.indptr))
    scores = _bm25(idf[term_of], counts.values, lengths[counts.entries], average, k1, b).astype(np.float32)
    return Postings(counts.keys, counts.indptr, counts.entries, scores)


def _bm25(idf: Any, tf: np.ndarray, length: np.ndarray, average: float, k1: float, b: float) -> np.ndarray:
    """Lucene's BM25 of term counts ``tf`` in documents of ``length`` terms."""
    tf = tf.astype(np.float64)
    return idf * tf / (tf + k1 * (1 - b + b * length / max(average, 1e-9)))


def _idf(frequency: int, docs: int) -> float:
    return math.log(1 + (docs - frequency + 0.5) / (frequency + 0.5))


class FreshSegment:
    """The term counts of rows an index does not cover, kept in memory beside it."""

    def __init__(self, analyzer: Analyzer, texts: Sequence[Any]) -> None:
        docs = [analyzer.terms(t) if isinstance(t, str) else [] for t in texts]
        keys, flat, doc_of = key_ids(docs)
        self.terms = count_postings(keys, flat, doc_of, len(docs))
        self.lengths = np.fromiter(map(len, docs), dtype=np.float64, count=len(docs))
        self.docs = len(docs)
        self.average_length = float(self.lengths.mean()) if len(docs) else 0.0
