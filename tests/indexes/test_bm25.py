"""BM25 indexes on their own: the analyzer, parameter checks, scores against bm25s used directly,
fresh rows scored with the index's statistics, the word list's substring masks, and the index file's arrays."""

from __future__ import annotations

import math

import bm25s
import msgpack
import numpy as np
import pytest
import Stemmer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensordb.errors import DataCorruptionError, IndexDefinitionError
from tensordb.indexes.bm25 import Bm25Index, FreshSegment, bm25_params
from tensordb.indexes.text import STOP_WORD_LISTS, Analyzer, analyzer_params, languages

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
#: Words with shared stems, stop words and capitals, so stemming, stop words and lower case all matter.
ALPHABET = ["fox", "foxes", "dog", "dogs", "run", "running", "runs", "quick", "lazy", "jumped", "jumping",
            "the", "and", "of", "a", "is", "Fox", "DOG", "brown", "zebra", "x1", "over"]


def analyzer(**params) -> Analyzer:
    return Analyzer(analyzer_params("t", params))


def index_of(texts, **params) -> Bm25Index:
    return Bm25Index.build(bm25_params("t", "text", params), texts)


# ------------------------------------------------------------------------------------------ analyzer
def test_stop_words_stemming_and_lower_case():
    a = analyzer()
    assert a.words("The Quick foxes, and THE dogs!") == ["the", "quick", "foxes", "and", "the", "dogs"]
    assert a.terms("The Quick foxes, and THE dogs!") == ["quick", "fox", "dog"]
    assert a.terms("running runs") == ["run", "run"]
    assert analyzer(stemming=False).terms("running foxes and dogs") == ["running", "foxes", "dogs"]
    assert analyzer(stop_words=False).terms("the fox") == ["the", "fox"]
    assert analyzer(stop_words=["fox"]).terms("the fox dog") == ["the", "dog"]
    assert analyzer(lowercase=False, stemming=False, stop_words=False).terms("Fox fox FOX") == ["Fox", "fox", "FOX"]
    # the default list is bm25s's English one
    assert set(analyzer_params("t", {})["stop_words"]) == set(bm25s.stopwords.STOPWORDS_EN)


def test_token_pattern():
    assert analyzer(stop_words=False).words("a b cd e-fg") == ["cd", "fg"]  # two or more word characters
    assert analyzer(token_pattern=r"\w+", stop_words=False).words("a b cd") == ["a", "b", "cd"]
    assert analyzer(token_pattern=r"[a-z]+(?:-[a-z]+)*", stemming=False, stop_words=False).words(
        "well-known x-ray 42") == ["well-known", "x-ray"]


def test_languages():
    names = languages()
    assert "english" in names and "german" in names and "finnish" in names
    german = analyzer(language="german")
    assert "und" not in german.terms("Hunde und Katzen") and len(german.terms("Hunde und Katzen")) == 2
    assert german.terms("Katzen") == Stemmer.Stemmer("german").stemWords(["katzen"])
    # a Snowball language bm25s has no stop-word list for: none by default
    assert "finnish" not in STOP_WORD_LISTS
    assert analyzer_params("t", {"language": "finnish"})["stop_words"] == []
    assert analyzer(language="finnish", stop_words=["ja"]).terms("koira ja kissa") == \
        Stemmer.Stemmer("finnish").stemWords(["koira", "kissa"])


BAD_PARAMS = {
    "unknown language": {"language": "klingon"},
    "language not text": {"language": 3},
    "non-bool stemming": {"stemming": "yes"},
    "int stemming": {"stemming": 1},
    "non-bool lowercase": {"lowercase": None},
    "bad regex": {"token_pattern": "(\\w"},
    "empty regex": {"token_pattern": ""},
    "capturing group": {"token_pattern": r"(\w+)"},
    "stop_words=True without a list": {"language": "finnish", "stop_words": True},
    "stop_words a string": {"stop_words": "the"},
    "stop_words not strings": {"stop_words": ["the", 1]},
    "negative k1": {"k1": -0.5},
    "nan k1": {"k1": float("nan")},
    "bool k1": {"k1": True},
    "string b": {"b": "0.5"},
    "b above 1": {"b": 1.5},
    "negative b": {"b": -0.1},
    "unknown param": {"k3": 1.0},
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_parameters_are_refused(case):
    with pytest.raises(IndexDefinitionError, match="'t'"):
        bm25_params("t", "text", BAD_PARAMS[case])


def test_parameters_are_completed_and_need_a_text_tensor():
    params = bm25_params("t", "text", {})
    assert {k: v for k, v in params.items() if k != "stop_words"} == {
        "language": "english", "stemming": True, "token_pattern": r"(?u)\b\w\w+\b", "lowercase": True,
        "k1": 1.5, "b": 0.75}
    assert bm25_params("t", "text", {"k1": 0, "b": 1})["k1"] == 0.0
    with pytest.raises(IndexDefinitionError, match="text tensor"):
        bm25_params("t", "json", {})


# --------------------------------------------------------------------------------- parity with bm25s
def bm25s_scores(texts: list[str], query: str, k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """bm25s on its own: its tokenizer (English stemmer, stop words 'en'), lucene, k1 1.5, b 0.75."""
    stemmer = Stemmer.Stemmer("english")
    corpus = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index(corpus, show_progress=False)
    tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[0]
    known = [t for t in tokens if t in retriever.vocab_dict and t != ""]
    return retriever.get_scores(known) if known else np.zeros(len(texts))


documents = st.lists(st.sampled_from(ALPHABET + [",", "."]), max_size=12).map(" ".join)
STOP_EN = set(bm25s.stopwords.STOPWORDS_EN)
#: At least one term somewhere (bm25s cannot index a corpus without any).
corpora = st.lists(documents, min_size=1, max_size=25).filter(
    lambda c: any(w.lower() not in STOP_EN for d in c for w in d.split() if len(w) > 1))
queries = st.lists(st.sampled_from(ALPHABET + ["unicorn"]), min_size=1, max_size=4).map(" ".join)


@SETTINGS
@given(corpora, queries)
def test_scores_equal_bm25s(texts, query):
    index = index_of(texts)
    got = index.scores(index.query_terms(query))
    assert got.shape == (len(texts),) and got.dtype == np.float64
    np.testing.assert_allclose(got, bm25s_scores(texts, query), rtol=1e-5, atol=1e-7)


@SETTINGS
@given(corpora, queries, st.sampled_from([0.0, 0.5, 1.2, 3.0]), st.sampled_from([0.0, 0.3, 1.0]))
def test_scores_equal_bm25s_with_other_k1_and_b(texts, query, k1, b):
    index = index_of(texts, k1=k1, b=b)
    np.testing.assert_allclose(index.scores(index.query_terms(query)), bm25s_scores(texts, query, k1, b),
                               rtol=1e-5, atol=1e-7)


def test_scores_follow_the_lucene_formula():
    texts = ["fox dog", "fox fox fox zebra", "dog", "", None, "the and"]
    index = index_of(texts)
    lengths = [2, 4, 1, 0, 0, 0]
    avg = sum(lengths) / len(lengths)
    assert index.average_length == pytest.approx(avg)

    def score(tf: int, df: int, length: int) -> float:
        idf = math.log(1 + (len(texts) - df + 0.5) / (df + 0.5))
        return idf * tf / (tf + 1.5 * (1 - 0.75 + 0.75 * length / avg))

    expected = [score(1, 2, 2), score(3, 2, 4), 0, 0, 0, 0]
    np.testing.assert_allclose(index.scores(["fox"]), expected, rtol=1e-6)
    # a repeated query term counts each time; an unknown one adds nothing
    np.testing.assert_allclose(index.scores(["fox", "fox", "unicorn"]), 2 * np.array(expected), rtol=1e-6)
    assert not index.scores([]).any() and not index.scores(["unicorn"]).any()


def test_an_empty_index():
    for texts in ([], [None, ""], ["the and of"]):
        index = index_of(texts)
        assert index.scores(index.query_terms("fox")).tolist() == [0.0] * len(texts)


# -------------------------------------------------------------------------------------- fresh rows
@SETTINGS
@given(corpora, queries, st.data())
def test_a_fresh_copy_of_an_indexed_row_scores_as_that_row(texts, query, data):
    index = index_of(texts)
    picked = data.draw(st.lists(st.integers(0, len(texts) - 1), min_size=1, max_size=5))
    fresh = FreshSegment(index.analyzer, [texts[i] for i in picked])
    terms = [t for t in index.query_terms(query) if t in index.terms.key_ids]  # terms the index holds
    np.testing.assert_allclose(index.fresh_scores(terms, fresh), index.scores(terms)[picked], rtol=1e-5, atol=1e-7)


def test_fresh_scores_follow_the_formula_with_the_index_statistics():
    index = index_of(["fox dog", "dog dog cat", "cat"])  # N 3, avglen 2, df(fox) 1, df(dog) 2
    fresh = FreshSegment(index.analyzer, ["fox fox zebra", "zebra", None, "dog"])
    assert fresh.docs == 4 and fresh.lengths.tolist() == [3, 1, 0, 1]

    def score(tf: int, idf: float, length: int, avg: float = 2.0) -> float:
        return idf * tf / (tf + 1.5 * (1 - 0.75 + 0.75 * length / avg))

    idf = lambda df, n: math.log(1 + (n - df + 0.5) / (df + 0.5))  # noqa: E731
    # fox: the index's df and N; zebra (unknown to the index): the fresh rows' df, N = 3 + 4
    expected = [score(2, idf(1, 3), 3) + score(1, idf(2, 7), 3), score(1, idf(2, 7), 1), 0.0, 0.0]
    np.testing.assert_allclose(index.fresh_scores(["fox", "zebra"], fresh), expected, rtol=1e-6)
    np.testing.assert_allclose(index.fresh_scores(["dog"], fresh), [0, 0, 0, score(1, idf(2, 3), 1)], rtol=1e-6)
    # an index of no rows: the fresh rows' own average length
    empty = index_of([])
    only = FreshSegment(empty.analyzer, ["fox", "fox dog dog"])
    avg = 2.0
    np.testing.assert_allclose(empty.fresh_scores(["fox"], only),
                               [score(1, idf(2, 2), 1, avg), score(1, idf(2, 2), 3, avg)], rtol=1e-6)


# ------------------------------------------------------------------------------------------- substrings
PIECES = ["fox", "Fox", "dog", "foxes", "a", "x", "ab", "abc", "dogfox", "über", "Straße", "İstanbul", "ﬁsh",
          "naïve", "日本", "K", "_", "1", "42", "a_b", "ǅ"]
PUNCTUATION = [" ", " ", " ", ",", ".", "-", "'", "!", "\n", "  "]
texts_st = st.lists(st.sampled_from(PIECES + PUNCTUATION), max_size=10).map("".join)


def check_superset(index: Bm25Index, texts: list[str], needle: str) -> None:
    mask = index.substring_entries(needle)
    if mask is None:
        return
    assert mask.shape == (len(texts),) and mask.dtype == bool
    missed = [t for t, m in zip(texts, mask) if needle in t and not m]
    assert not missed, f"needle {needle!r}: texts holding it ruled out: {missed}"


@SETTINGS
@given(st.lists(texts_st, min_size=1, max_size=12), st.data())
def test_substring_entries_never_rule_out_a_match(texts, data):
    index = index_of(texts)
    for _ in range(6):
        if data.draw(st.booleans()):
            text = data.draw(st.sampled_from(texts))
            lo = data.draw(st.integers(0, len(text)))
            needle = text[lo: data.draw(st.integers(lo, len(text)))]
        else:
            needle = data.draw(st.text(st.sampled_from("abfoxdgeK_ -.,'1İß"), max_size=6))
        if needle:
            check_superset(index, texts, needle)


def test_substring_entries_narrow():
    texts = ["the quick fox", "foxes run", "a dog", "Fox-hound", "nothing", None]
    index = index_of(texts)
    assert index.substring_entries("fox").tolist() == [True, True, False, True, False, False]
    assert index.substring_entries(" fox").tolist() == [True, True, False, True, False, False]  # a word from fox
    assert index.substring_entries("fox ").tolist() == [True, False, False, True, False, False]  # a word to fox
    assert index.substring_entries(" fox ").tolist() == [True, False, False, True, False, False]  # the word
    assert index.substring_entries("quick fox").tolist() == [True, False, False, False, False, False]
    assert index.substring_entries("zebra").tolist() == [False] * 6
    assert index.substring_entries("x") is None  # no run of two word characters: cannot tell
    assert index.substring_entries("über") is None  # not ASCII
    assert index_of(texts, token_pattern=r"\w+").substring_entries("fox") is None  # another pattern


# ------------------------------------------------------------------------------------------- the file
def round_trip(index: Bm25Index) -> Bm25Index:
    payload, arrays = index.to_arrays()
    return Bm25Index.from_arrays(index.params, payload, arrays, index.entries, "indexes/x")


def test_round_trip():
    texts = ["the quick fox", "foxes run", "a dog", None, "", "dog dog fox"]
    index = index_of(texts, k1=1.2, b=0.5)
    again = round_trip(index)
    assert again.entries == index.entries and again.average_length == index.average_length
    assert again.params == index.params and again.k1 == 1.2 and again.b == 0.5
    for p, q in ((again.terms, index.terms), (again.words, index.words)):
        assert p.keys == q.keys
        for a, b in ((p.indptr, q.indptr), (p.entries, q.entries), (p.values, q.values)):
            np.testing.assert_array_equal(a, b)
    for query in ("fox", "dog run", "unicorn"):
        np.testing.assert_array_equal(again.scores(again.query_terms(query)), index.scores(index.query_terms(query)))
    for needle in ("fox", " dog", "x"):
        a, b = again.substring_entries(needle), index.substring_entries(needle)
        assert (a is None and b is None) or a.tolist() == b.tolist()
    empty = round_trip(index_of([]))
    assert empty.entries == 0 and empty.scores(["fox"]).tolist() == []


def packed(keys) -> np.ndarray:
    return np.frombuffer(msgpack.packb(keys, use_bin_type=True), dtype=np.uint8)


def set_at(a: np.ndarray, i: int, value) -> np.ndarray:
    a = a.copy()
    a[i] = value
    return a


FORGED = {
    "indptr not monotone": lambda a: a.update(terms_indptr=set_at(a["terms_indptr"], 1, a["terms_indptr"][2] + 1)),
    "indptr not from 0": lambda a: a.update(words_indptr=set_at(a["words_indptr"], 0, 1)),
    "indptr short": lambda a: a.update(terms_indptr=a["terms_indptr"][:-1]),
    "indptr float": lambda a: a.update(terms_indptr=a["terms_indptr"].astype(np.float64)),
    "entry past the rows": lambda a: a.update(terms_entries=set_at(a["terms_entries"], 0, 6)),
    "entry negative": lambda a: a.update(words_entries=set_at(a["words_entries"], 0, -1)),
    "entries 2-d": lambda a: a.update(terms_entries=a["terms_entries"].reshape(1, -1)),
    "NaN score": lambda a: a.update(terms_scores=set_at(a["terms_scores"], 0, np.nan)),
    "inf score": lambda a: a.update(terms_scores=set_at(a["terms_scores"], 0, np.inf)),
    "scores int": lambda a: a.update(terms_scores=a["terms_scores"].astype(np.int32)),
    "scores short": lambda a: a.update(terms_scores=a["terms_scores"][:-1]),
    "entries short": lambda a: a.update(terms_entries=a["terms_entries"][:-1]),
    "duplicate keys": lambda a: a.update(terms_keys=packed(["fox"] * len(msgpack.unpackb(a["terms_keys"].tobytes())))),
    "keys not strings": lambda a: a.update(words_keys=packed(list(range(len(msgpack.unpackb(
        a["words_keys"].tobytes())))))),
    "keys a map": lambda a: a.update(terms_keys=packed({"fox": 1})),
    "keys one fewer": lambda a: a.update(terms_keys=packed(msgpack.unpackb(a["terms_keys"].tobytes())[:-1])),
    "keys garbage": lambda a: a.update(terms_keys=np.frombuffer(b"\xc1\xc1", np.uint8)),
    "keys extra data": lambda a: a.update(terms_keys=np.concatenate([a["terms_keys"], packed([1])])),
    "keys truncated": lambda a: a.update(words_keys=a["words_keys"][:-1]),
    "scores missing": lambda a: a.pop("terms_scores"),
    "words missing": lambda a: a.pop("words_entries"),
}


@pytest.mark.parametrize("forgery", sorted(FORGED))
def test_forged_arrays_are_refused(forgery):
    index = index_of(["the quick fox", "foxes run", "a dog", None, "", "dog dog fox"])
    payload, arrays = index.to_arrays()
    arrays = dict(arrays)
    FORGED[forgery](arrays)
    with pytest.raises(DataCorruptionError, match="indexes/x"):
        Bm25Index.from_arrays(index.params, payload, arrays, index.entries, "indexes/x")


@pytest.mark.parametrize("payload", [{}, {"average_length": -1.0}, {"average_length": float("nan")},
                                     {"average_length": float("inf")}, {"average_length": "2"},
                                     {"average_length": True}])
def test_a_forged_payload_is_refused(payload):
    index = index_of(["fox dog", "dog"])
    _, arrays = index.to_arrays()
    with pytest.raises(DataCorruptionError, match="indexes/x"):
        Bm25Index.from_arrays(index.params, payload, arrays, index.entries, "indexes/x")


@pytest.mark.parametrize("params", [{"k1": -1}, {"language": "klingon"}, {"token_pattern": "(x)"}])
def test_forged_parameters_are_refused(params):
    index = index_of(["fox dog", "dog"])
    payload, arrays = index.to_arrays()
    with pytest.raises(DataCorruptionError, match="indexes/x"):
        Bm25Index.from_arrays({**index.params, **params}, payload, arrays, index.entries, "indexes/x")


def test_fewer_rows_than_the_entries_name_is_refused():
    index = index_of(["fox dog", "dog", "cat fox"])
    payload, arrays = index.to_arrays()
    with pytest.raises(DataCorruptionError):
        Bm25Index.from_arrays(index.params, payload, arrays, 2, "indexes/x")


def test_a_fresh_row_ties_exactly_with_its_indexed_twin():
    index = index_of(["fox dog", "cat bird", "fox fox"])
    fresh = FreshSegment(index.analyzer, ["fox dog"])
    terms = index.query_terms("fox")
    assert index.fresh_scores(terms, fresh)[0] == index.scores(terms)[0]  # bit for bit, not just close


def test_the_stem_cache_stays_bounded(monkeypatch):
    from tensordb.indexes import text

    monkeypatch.setattr(text, "STEM_CACHE_WORDS", 50)
    index = index_of(["fox dog"])
    for i in range(40):
        index.query_terms(" ".join(f"word{i}x{j}" for j in range(5)))
        assert index.analyzer.remembered_stems <= 50
    assert index.query_terms("foxes running") == ["fox", "run"]
