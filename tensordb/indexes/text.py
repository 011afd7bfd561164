"""Text analysis for full-text indexes: words, lower case, stop words and Snowball stems.

A text becomes *words* (the matches of ``token_pattern``, lower-cased) and then *terms*
(words that are not stop words, stemmed with the language's Snowball stemmer from
PyStemmer). Documents and queries go through the same analyzer, whose parameters are
stored with the index, so a query always meets the terms the index was built with.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import IndexDefinitionError, MissingExtraError

#: Runs of two or more word characters (bm25s's and scikit-learn's default).
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"
#: bm25s's stop-word lists, by the Snowball language they belong to.
STOP_WORD_LISTS = {
    "english": "STOPWORDS_EN", "german": "STOPWORDS_GERMAN", "dutch": "STOPWORDS_DUTCH",
    "french": "STOPWORDS_FRENCH", "spanish": "STOPWORDS_SPANISH", "portuguese": "STOPWORDS_PORTUGUESE",
    "italian": "STOPWORDS_ITALIAN", "russian": "STOPWORDS_RUSSIAN", "swedish": "STOPWORDS_SWEDISH",
    "norwegian": "STOPWORDS_NORWEGIAN", "turkish": "STOPWORDS_TURKISH", "danish": "STOPWORDS_DANISH",
}
ANALYZER_PARAMS = ("language", "stemming", "stop_words", "token_pattern", "lowercase")
#: Distinct query words whose stems an analyzer remembers (it forgets them all past this many).
STEM_CACHE_WORDS = 65_536


def text_modules() -> tuple[Any, Any]:
    """``(Stemmer, bm25s)``: PyStemmer and bm25s, the ``text`` extra."""
    try:
        import bm25s
        import Stemmer
    except ImportError as e:
        raise MissingExtraError(
            "BM25 indexes need bm25s and PyStemmer, which are not installed: pip install 'tensordb[text]'"
        ) from e
    return Stemmer, bm25s


def languages() -> list[str]:
    """The languages a BM25 index can stem (PyStemmer's Snowball algorithms)."""
    return sorted(text_modules()[0].algorithms())


def analyzer_params(tensor: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The analyzer's parameters, checked and completed (``stop_words`` becomes the list itself)."""
    language = params.get("language", "english")
    if not isinstance(language, str) or language not in languages():
        raise IndexDefinitionError(
            f"tensor {tensor!r}: unknown language {language!r} for a bm25 index; expected one of {languages()}"
        )
    stemming = _flag(tensor, params, "stemming", True)
    lowercase = _flag(tensor, params, "lowercase", True)
    pattern = params.get("token_pattern", DEFAULT_TOKEN_PATTERN)
    if not isinstance(pattern, str) or not pattern:
        raise IndexDefinitionError(f"tensor {tensor!r}: token_pattern must be a regular expression, got {pattern!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise IndexDefinitionError(
            f"tensor {tensor!r}: token_pattern {pattern!r} is not a regular expression: {e}"
        ) from None
    if compiled.groups:
        raise IndexDefinitionError(
            f"tensor {tensor!r}: token_pattern {pattern!r} has capturing groups; use (?:...) so a match is one word"
        )
    stop_words = _stop_words(tensor, language, params.get("stop_words"))
    return {"language": language, "stemming": stemming, "stop_words": stop_words, "token_pattern": pattern,
            "lowercase": lowercase}


def _flag(tensor: str, params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise IndexDefinitionError(f"tensor {tensor!r}: {name} must be True or False, got {value!r}")
    return value


def _stop_words(tensor: str, language: str, given: Any) -> list[str]:
    """``None``: the language's list, if bm25s has one; True: that list, required; False: none; or the words."""
    if given is None or given is True:
        name = STOP_WORD_LISTS.get(language)
        if name is None and given is True:
            raise IndexDefinitionError(
                f"tensor {tensor!r}: there is no stop-word list for {language!r} (lists: {sorted(STOP_WORD_LISTS)}); "
                f"pass stop_words=[...] or stop_words=False"
            )
        return [] if name is None else sorted(set(getattr(text_modules()[1].stopwords, name)))
    if given is False:
        return []
    if isinstance(given, str) or not isinstance(given, Sequence) or not all(isinstance(w, str) for w in given):
        raise IndexDefinitionError(
            f"tensor {tensor!r}: stop_words must be True, False or a list of words, got {given!r:.80}"
        )
    return sorted(set(given))


class Analyzer:
    """Turns texts into terms the way one index's parameters say."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.lowercase = bool(params["lowercase"])
        self.stop_words = frozenset(params["stop_words"])
        self.pattern = re.compile(params["token_pattern"])
        self.default_pattern = params["token_pattern"] == DEFAULT_TOKEN_PATTERN
        self._stemmer = text_modules()[0].Stemmer(params["language"]) if params["stemming"] else None
        self._stems: dict[str, str] = {}
        self._lock = threading.Lock()  # a PyStemmer stemmer is not safe to share between threads

    @property
    def remembered_stems(self) -> int:
        """How many distinct words' stems the analyzer remembers now."""
        return len(self._stems)

    def words(self, text: str) -> list[str]:
        """A text's words, in order (stop words included)."""
        return self.pattern.findall(text.lower() if self.lowercase else text)

    def terms(self, text: str) -> list[str]:
        """A text's terms, in order: its words less stop words, stemmed."""
        return self.terms_of_words(self.words(text))

    def terms_of_words(self, words: Sequence[str]) -> list[str]:
        """The terms of a list of words (recently stemmed words are remembered, up to ``STEM_CACHE_WORDS``)."""
        kept = [w for w in words if w not in self.stop_words]
        if self._stemmer is None:
            return kept
        with self._lock:
            stems = self._stems
            unknown = [w for w in set(kept) if w not in stems]
            if unknown:
                if len(stems) + len(unknown) > STEM_CACHE_WORDS:
                    stems = self._stems = {}
                stems.update(zip(unknown, self._stemmer.stemWords(unknown)))
            return [stems[w] for w in kept]

    def term_map(self, words: Sequence[str]) -> dict[str, str | None]:
        """Each distinct word's term, or None for a stop word (a corpus's vocabulary: nothing is remembered)."""
        distinct = list(dict.fromkeys(words))
        kept = [w for w in distinct if w not in self.stop_words]
        out: dict[str, str | None] = dict.fromkeys(distinct)
        if self._stemmer is None:
            out.update(zip(kept, kept))
        else:
            with self._lock:
                out.update(zip(kept, self._stemmer.stemWords(kept)))
        return out
