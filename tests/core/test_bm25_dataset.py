"""BM25 indexes on a dataset: ``ORDER BY bm25_similarity(...) LIMIT k`` against a brute-force ranking, rows
appended, deleted and updated after the build, rebuilds, old commits, views, ``contains``/``LIKE`` narrowed by
the index against the same queries without it, and refusals that leave the dataset unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import tensordb
from query_lang.errors import TQLError, TQLTypeError
from tensordb.errors import IndexDefinitionError, IndexNotFoundError
from tensordb.indexes.bm25 import Bm25Index, FreshSegment, bm25_params

N = 300
WORDS = ["fox", "foxes", "dog", "dogs", "run", "running", "quick", "lazy", "jumped", "brown", "over", "the", "and",
         "of", "a", "river", "stone", "Fox", "DOG", "cat", "cats", "x", "ab", "über", "naïve", "日本", "İstanbul"]
PUNCT = [" ", " ", " ", " ", ", ", ". ", "-", "'", "! ", "\n"]
QUERIES = ["fox", "quick dog", "running foxes", "the lazy cat", "river stone fox", "zebrafish", "FOX fox"]


def random_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(int(rng.integers(0, 10))):
            parts += [WORDS[int(rng.integers(len(WORDS)))], PUNCT[int(rng.integers(len(PUNCT)))]]
        out.append("".join(parts))
    return out


def make_ds(path: str, texts: list[str], index: bool = True) -> tensordb.Dataset:
    ds = tensordb.empty(path, overwrite=True)
    ds.create_tensor("text", htype="text", max_chunk_size=2048)  # several chunks
    ds.create_tensor("id", htype="generic", dtype="int64")
    ds.create_tensor("n", htype="generic", dtype="int64")
    ds.extend({"text": texts, "id": np.arange(len(texts)), "n": np.arange(len(texts)) % 100})
    if index:
        ds.text.create_index("fts", kind="bm25")
    return ds


@pytest.fixture
def texts() -> list[str]:
    return random_texts(N, seed=1)


@pytest.fixture
def ds(tmp_path, texts):
    return make_ds(str(tmp_path / "ds"), texts)


def scores(table, query: str, where: str = "") -> np.ndarray:
    view = table.query(f"select bm25_similarity(text, '{query}') as s {where}")
    return np.asarray(view.s.numpy(), dtype=np.float64).reshape(-1)


def reference(texts: list, query: str) -> np.ndarray:
    """Scores of an index built on exactly ``texts``."""
    index = Bm25Index.build(bm25_params("text", "text", {}), texts)
    return index.scores(index.query_terms(query)).astype(np.float64)


def topk(table, query: str, k: int, where: str = "") -> list[int]:
    clause = f"where {where} " if where else ""
    return table.query(f"select * {clause}order by bm25_similarity(text, '{query}') desc limit {k}"
                       ).row_positions.tolist()


def brute_topk(s: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[int]:
    """The best ``k`` rows by score, descending, ties broken by the lower row."""
    rows = np.arange(len(s)) if rows is None else np.asarray(rows)
    order = np.lexsort((rows, -s[rows]))
    return rows[order][:k].tolist()


def ids(table) -> list[int]:
    return [int(i) for i in np.asarray(table.id.numpy()).reshape(-1)]


def texts_of(table) -> list:
    return list(table.text.numpy(aslist=True))


# -------------------------------------------------------------------------------------------- ranking
def test_the_index_is_described(ds):
    info = ds.indexes["fts"]
    assert (info["tensor"], info["kind"], info["rows"], info["fresh_rows"], info["deleted_rows"]) == \
        ("text", "bm25", N, 0, 0)
    assert info["params"]["language"] == "english" and info["params"]["k1"] == 1.5 and info["params"]["b"] == 0.75


@pytest.mark.parametrize("query", QUERIES)
def test_topk_equals_a_brute_force_ranking(ds, texts, query):
    s = scores(ds, query)
    np.testing.assert_allclose(s, reference(texts, query), rtol=1e-6)
    for k in (1, 7, 50, N + 5):
        assert topk(ds, query, k) == brute_topk(s, k), k
    offset = ds.query(f"select * order by bm25_similarity(text, '{query}') desc limit 5 offset 3").row_positions
    assert offset.tolist() == brute_topk(s, 8)[3:]
    ascending = ds.query(f"select * order by bm25_similarity(text, '{query}') asc limit 6").row_positions
    assert ascending.tolist() == np.lexsort((np.arange(N), s))[:6].tolist()
    if query == "zebrafish":  # no row holds it: every score is 0, rows in order
        assert not s.any() and topk(ds, query, 4) == [0, 1, 2, 3]


@pytest.mark.parametrize("where", ["n < 30", "contains(text, 'dog')", "text LIKE '%river%'", "n >= 50 and n < 55"])
def test_where_and_bm25_ordering(ds, texts, where):
    s = scores(ds, "quick fox")
    passing = ds.query(f"select * where {where}").row_positions
    assert len(passing) > 0
    for k in (3, 40):
        assert topk(ds, "quick fox", k, where) == brute_topk(s, k, passing), (where, k)
    np.testing.assert_allclose(scores(ds, "quick fox", f"where {where}"), s[passing], rtol=1e-6)


# ------------------------------------------------------------------------------------- rows after the build
def test_appended_rows_are_found_and_scored(ds, texts):
    added = ["zebrafish in the river", "fox", texts[5], "zebrafish zebrafish quick", "", "nothing at all"]
    ds.extend({"text": added, "id": np.arange(N, N + len(added)), "n": np.zeros(len(added), np.int64)})
    assert ds.indexes["fts"]["fresh_rows"] == len(added)
    index = Bm25Index.build(bm25_params("text", "text", {}), texts)
    fresh = FreshSegment(index.analyzer, added)
    for query in ["zebrafish", "fox", "quick zebrafish", "river stone fox"]:
        s = scores(ds, query)
        terms = index.query_terms(query)
        np.testing.assert_allclose(s[:N], index.scores(terms), rtol=1e-6)
        np.testing.assert_allclose(s[N:], index.fresh_scores(terms, fresh), rtol=1e-6)
        assert topk(ds, query, 10) == brute_topk(s, 10)
    # a copy of an indexed row scores as that row; rows holding a term only they have come first
    assert scores(ds, "quick dog")[N + 2] == pytest.approx(scores(ds, "quick dog")[5], rel=1e-6)
    assert topk(ds, "zebrafish", 2) == [N + 3, N]
    assert set(topk(ds, "fox", N)) >= {N + 1}


def test_deleted_rows_never_come_back_and_updated_rows_score_by_their_new_text(ds, texts):
    holding = [i for i, t in enumerate(texts) if "fox" in t.lower().split()]
    gone = holding[:3] + [0, N - 1]
    ds.pop(gone)
    kept = [i for i in range(N) if i not in gone]
    assert ids(ds) == kept
    original = reference(texts, "fox")
    s = scores(ds, "fox")
    # the index's statistics still hold the deleted rows: the others keep their scores
    np.testing.assert_allclose(s, original[kept], rtol=1e-6)
    for k in (5, N):
        got = [ids(ds)[r] for r in topk(ds, "fox", k)]
        assert not set(got) & set(gone) and got == [kept[r] for r in brute_topk(s, k)]

    position = ids(ds).index(holding[4])  # a row that held fox now holds zebrafish only
    ds.update(position, {"text": "zebrafish zebrafish"})
    other = ids(ds).index(next(i for i in kept if original[i] == 0))  # a row without fox now has it
    ds.update(other, {"text": "fox fox fox"})
    s = scores(ds, "fox")
    assert s[position] == 0 and s[other] > 0
    assert topk(ds, "zebrafish", 1) == [position] and scores(ds, "zebrafish")[position] > 0
    assert np.count_nonzero(scores(ds, "zebrafish")) == 1
    assert topk(ds, "fox", 1) == [other]
    assert topk(ds, "fox", N) == brute_topk(s, N)
    assert len(ds.query("select * order by bm25_similarity(text, 'fox') desc limit 1000")) == len(ds) == N - 5


def test_rebuild_folds_fresh_rows_in(ds, texts):
    added = random_texts(40, seed=2)
    ds.extend({"text": added, "id": np.arange(N, N + 40), "n": np.zeros(40, np.int64)})
    ds.pop([1, 2, 3])
    ds.update(0, {"text": "quick quick fox"})
    assert ds.indexes["fts"]["fresh_rows"] > 0
    ds.rebuild_index("fts")
    info = ds.indexes["fts"]
    assert (info["rows"], info["fresh_rows"], info["deleted_rows"]) == (len(ds), 0, 0)
    now = texts_of(ds)
    for query in QUERIES:
        s = scores(ds, query)
        np.testing.assert_allclose(s, reference(now, query), rtol=1e-6)  # as an index built on these rows
        assert topk(ds, query, 10) == brute_topk(s, 10)


def test_an_old_commit_uses_its_own_index(path, texts):
    ds = make_ds(path, texts)
    first = ds.commit("indexed")
    ds.extend({"text": ["zebrafish fox"] * 5, "id": np.arange(N, N + 5), "n": np.zeros(5, np.int64)})
    ds.update(0, {"text": "zebrafish"})
    ds.rebuild_index("fts")
    second = ds.commit("rebuilt")
    ds.drop_index("fts")
    for address, rows in ((first, texts), (second, texts_of(tensordb.load(f"{path}@{second}", read_only=True)))):
        old = tensordb.load(f"{path}@{address}", read_only=True)
        assert old.indexes["fts"]["fresh_rows"] == 0 and len(old) == len(rows)
        for query in ("fox", "zebrafish", "quick dog"):
            s = scores(old, query)
            np.testing.assert_allclose(s, reference(rows, query), rtol=1e-6)
            assert topk(old, query, 10) == brute_topk(s, 10)
    assert not scores(tensordb.load(f"{path}@{first}", read_only=True), "zebrafish").any()
    with pytest.raises(IndexNotFoundError):  # the working state dropped it; the commits keep theirs
        scores(ds, "fox")
    ds.checkout(first)
    np.testing.assert_allclose(scores(ds, "fox"), reference(texts, "fox"), rtol=1e-6)


def test_views_take_the_dataset_scores_at_their_rows(ds, texts):
    """A view's rows are scored as the dataset's (its statistics); its results name dataset rows."""
    s = scores(ds, "quick fox")
    picked = [17, 3, 250, 3, 99, 0]
    view = ds[picked]
    np.testing.assert_allclose(scores(view, "quick fox"), s[picked], rtol=1e-6)
    assert topk(view, "quick fox", 4) == [picked[r] for r in brute_topk(s[picked], 4)]
    result = ds.query("select * where n < 40")
    base = result.row_positions
    np.testing.assert_allclose(scores(result, "quick fox"), s[base], rtol=1e-6)
    assert topk(result, "quick fox", 5) == brute_topk(s, 5, base)
    again = ds.query("select * where n < 40 order by bm25_similarity(text, 'quick fox') desc limit 5")
    assert again.row_positions.tolist() == brute_topk(s, 5, base)
    fox = scores(ds, "fox")
    assert topk(ds[100:200], "fox", 5) == brute_topk(fox, 5, np.arange(100, 200))


# ---------------------------------------------------------------------------------------- contains and LIKE
FILTERS = [
    "contains(text, 'fox')", "contains(text, 'Fox')", "contains(text, ' fox ')", "contains(text, 'fox, ')",
    "contains(text, 'x f')", "contains(text, 'ab')", "contains(text, 'b')", "contains(text, 'dog.')",
    "contains(text, 'über')", "contains(text, 'stanbul')", "contains(text, 'zebra')", "contains(text, 'og-ca')",
    "not contains(text, 'river')", "contains(text, 'river') or n < 3", "contains(text, 'lazy') and n > 50",
    "text LIKE '%fox%'", "text LIKE 'fox%'", "text LIKE '%dog'", "text LIKE '%quick%brown%'", "text LIKE 'a_b%'",
    "text LIKE '%x-%'", "text LIKE '%river, %'", "text NOT LIKE '%fox%'", "text NOT LIKE '%the %river%'",
    "text NOT LIKE '%zebra%'", "text ILIKE '%FOX%'", "text LIKE ''", "text NOT LIKE ''", "text LIKE '%'",
    "not (text LIKE '%dog%')",
]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The same few hundred noisy texts with a bm25 index (plus fresh, updated and deleted rows) and without."""
    texts = random_texts(N, seed=7) + ["", "FOX-fox", "x fox", "fox, dog.", "über naïve 日本 İstanbul"]
    base = tmp_path_factory.mktemp("bm25-like")
    plain = make_ds(str(base / "plain"), texts, index=False)
    indexed = make_ds(str(base / "indexed"), texts)
    for table in (plain, indexed):
        table.extend({"text": ["quick fox river", "Dog's river", "ab"], "id": [N + 5, N + 6, N + 7], "n": [1, 2, 3]})
        table.pop([4, 40])
        table.update(10, {"text": "zebra fox"})
    return plain, indexed


@pytest.mark.parametrize("where", FILTERS)
def test_contains_and_like_with_the_index_equal_those_without(noisy, where):
    plain, indexed = noisy
    assert texts_of(plain) == texts_of(indexed)
    expected = plain.query(f"select * where {where}").row_positions.tolist()
    assert indexed.query(f"select * where {where}").row_positions.tolist() == expected
    assert indexed.query(f"select * where {where}", exact=True).row_positions.tolist() == expected


def test_the_index_narrows_a_contains(noisy, monkeypatch):
    """The word list is asked, and its mask is a real narrowing (not every row)."""
    from tensordb.core.index_search import IndexAccess

    masks = []
    original = IndexAccess.substring_candidates

    def spy(self, column, needles):
        mask = original(self, column, needles)
        masks.append(mask)
        return mask

    monkeypatch.setattr(IndexAccess, "substring_candidates", spy)
    indexed = noisy[1]
    got = indexed.query("select * where contains(text, 'river')").row_positions
    assert masks and masks[-1] is not None and 0 < masks[-1].sum() < len(indexed)
    assert set(got.tolist()) <= set(np.flatnonzero(masks[-1]).tolist())


# ------------------------------------------------------------------------------------------------- refusals
def state_of(ds) -> tuple:
    return (ds.indexes, len(ds), texts_of(ds), topk(ds, "quick fox", 10), scores(ds, "fox").round(6).tolist(),
            ds.query("select * where contains(text, 'dog')").row_positions.tolist())


REFUSED = {
    "bm25 on an int tensor": (lambda ds: ds.n.create_index("x", kind="bm25"), IndexDefinitionError, "text tensor"),
    "unknown language": (lambda ds: ds.text.create_index("x", kind="bm25", language="klingon"),
                         IndexDefinitionError, "klingon"),
    "unknown parameter": (lambda ds: ds.text.create_index("x", kind="bm25", metric="cosine"),
                          IndexDefinitionError, "metric"),
    "b above 1": (lambda ds: ds.text.create_index("x", kind="bm25", b=2), IndexDefinitionError, "b"),
    "empty query": (lambda ds: ds.query("select * order by bm25_similarity(text, '') desc limit 3"),
                    TQLTypeError, "empty"),
    "blank query": (lambda ds: ds.query("select * order by bm25_similarity(text, '   ') desc limit 3"),
                    TQLTypeError, "empty"),
    "a non-text tensor": (lambda ds: ds.query("select * order by bm25_similarity(n, 'fox') desc limit 3"),
                          TQLTypeError, "text tensor"),
    "a column as the query": (lambda ds: ds.query("select * order by bm25_similarity(text, text) desc limit 3"),
                              TQLTypeError, "query text"),
    "a number as the query": (lambda ds: ds.query("select * order by bm25_similarity(text, 3) desc limit 3"),
                              TQLTypeError, "query text"),
    "one argument": (lambda ds: ds.query("select * order by bm25_similarity(text) desc limit 3"), TQLError,
                     "bm25_similarity"),
    "in a WHERE on a non-text tensor": (lambda ds: ds.query("select * where bm25_similarity(id, 'x') > 0"),
                                        TQLTypeError, "text tensor"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refusals_leave_the_dataset_unchanged(ds, case):
    before = state_of(ds)
    operation, error, words = REFUSED[case]
    with pytest.raises(error, match=words):
        operation(ds)
    assert state_of(ds) == before


def test_bm25_similarity_without_an_index(tmp_path, texts):
    ds = make_ds(str(tmp_path / "ds"), texts, index=False)
    before = (ds.indexes, len(ds), texts_of(ds))
    for tql in ("select * order by bm25_similarity(text, 'fox') desc limit 3",
                "select bm25_similarity(text, 'fox') as s",
                "select * where bm25_similarity(text, 'fox') > 0"):
        with pytest.raises(IndexNotFoundError) as refused:
            ds.query(tql)
        message = str(refused.value)
        assert "create_index" in message and "kind='bm25'" in message and "'text'" in message, message
    assert (ds.indexes, len(ds), texts_of(ds)) == before
    ds.text.create_index("fts", kind="bm25")  # the way the message says
    assert topk(ds, "fox", 3) == brute_topk(scores(ds, "fox"), 3)


def test_a_second_index_and_other_analyzers(ds, texts):
    ds.text.create_index("plain", kind="bm25", stemming=False, stop_words=False)
    # the first index (by name) serves bm25_similarity unless search_params names another
    np.testing.assert_allclose(scores(ds, "running foxes"), reference(texts, "running foxes"), rtol=1e-6)
    view = ds.query("select bm25_similarity(text, 'running foxes') as s", search_params={"index": "plain"})
    unstemmed = Bm25Index.build(bm25_params("text", "text", {"stemming": False, "stop_words": False}), texts)
    np.testing.assert_allclose(np.asarray(view.s.numpy(), dtype=np.float64).reshape(-1),
                               unstemmed.scores(unstemmed.query_terms("running foxes")), rtol=1e-6)


def test_search_params_naming_no_index_is_refused(ds):
    """As for a vector search: a name that is no index of this version (a typo) is an error, not a silent
    fall back to another bm25 index; the name of another tensor's index is fine (one search_params serves a
    hybrid query's vector and text parts)."""
    ds.text.create_index("plain", kind="bm25", stemming=False)
    with pytest.raises(IndexNotFoundError, match="nope"):
        ds.query("select * order by bm25_similarity(text, 'fox') desc limit 3", search_params={"index": "nope"})


def test_contains_on_views_with_the_index_equal_those_without(noisy):
    plain, indexed = noisy
    picked = [300, 5, 17, 5, 0, 301, 250]
    for where in ("contains(text, 'fox')", "text NOT LIKE '%river%'", "contains(text, ' dog')"):
        expected = plain[picked].query(f"select * where {where}").row_positions.tolist()
        assert indexed[picked].query(f"select * where {where}").row_positions.tolist() == expected, where
