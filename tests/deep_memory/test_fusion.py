"""Fusion of a dense and a lexical ranking (rrf, convex), its checks, and fit_fusion's choice on validation data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensordb.deep_memory import fusion
from tensordb.deep_memory.fusion import (
    DEFAULT_FUSION,
    LISTED_FLOOR,
    MIN_GAIN,
    RRF_K,
    FusionChoice,
    Ranking,
    check_fusion,
    fit_fusion,
    fuse,
)
from tensordb.errors import SampleError


def ranking(pairs: list[tuple[str, float]]) -> Ranking:
    return Ranking([k for k, _ in pairs], np.asarray([s for _, s in pairs], dtype=np.float64))


def as_dict(r: Ranking) -> dict:
    return dict(zip(r.keys, r.scores.tolist(), strict=True))


# -- rrf by hand ---------------------------------------------------------------------------------
def test_rrf_sums_reciprocal_ranks_with_the_rank_constant():
    dense = ranking([("a", 0.9), ("b", 0.8), ("c", 0.1)])
    lexical = ranking([("c", 7.0), ("d", 3.0)])
    fused = fuse(dense, lexical, "rrf")
    expected = {"a": 1 / 61, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 62}
    assert as_dict(fused) == pytest.approx(expected)
    # b and d tie at 1/62: b was seen first (in the dense list).
    assert list(fused.keys) == ["c", "a", "b", "d"]


def test_rrf_k_changes_the_scores_and_can_change_the_order():
    dense = ranking([("a", 1.0), ("b", 0.5)])
    lexical = ranking([("x", 1.0), ("y", 0.9), ("b", 0.1)])
    assert as_dict(fuse(dense, lexical, "rrf", rrf_k=1)) == pytest.approx(
        {"a": 1 / 2, "b": 1 / 3 + 1 / 4, "x": 1 / 2, "y": 1 / 3})
    assert list(fuse(dense, lexical, "rrf", rrf_k=1).keys) == ["b", "a", "x", "y"]
    assert list(fuse(dense, lexical, "rrf", rrf_k=1000).keys) == ["b", "a", "x", "y"]
    # b's ranks 2 and 3 beat a lone rank 1 at every constant (at k=1: 1/3 + 1/4 > 1/2).
    assert list(fuse(dense, lexical, "rrf", rrf_k=RRF_K).keys)[0] == "b"


def test_rrf_ignores_score_magnitudes():
    dense = ranking([("a", 1000.0), ("b", 0.001)])
    lexical = ranking([("b", 1e-9), ("a", 1e-10)])
    assert as_dict(fuse(dense, lexical, "rrf")) == pytest.approx({"a": 1 / 61 + 1 / 62, "b": 1 / 62 + 1 / 61})
    assert list(fuse(dense, lexical, "rrf").keys) == ["a", "b"]  # an exact tie: the dense order


# -- convex by hand -------------------------------------------------------------------------------
def test_convex_normalises_each_list_and_counts_a_missing_doc_as_zero():
    dense = ranking([("a", 3.0), ("b", 2.0), ("c", 1.0)])  # -> 1, 0.5 (nearly), the floor
    lexical = ranking([("c", 10.0), ("d", 5.0)])  # -> 1, the floor
    half = LISTED_FLOOR + (1 - LISTED_FLOOR) * 0.5
    fused = fuse(dense, lexical, "convex", alpha=0.5)
    assert as_dict(fused) == pytest.approx(
        {"a": 0.5, "b": 0.5 * half, "c": 0.5 * (LISTED_FLOOR + 1), "d": 0.5 * LISTED_FLOOR}, abs=1e-12)
    assert list(fused.keys) == ["c", "a", "b", "d"]  # c's lowest dense score still counts, above a's absence
    weighted = fuse(dense, lexical, "convex", alpha=0.2)
    assert list(weighted.keys) == ["c", "a", "b", "d"]
    # A document a list holds counts above one it does not: at alpha 0 the lexical list comes first, whole.
    assert list(fuse(dense, lexical, "convex", alpha=0.0).keys)[:2] == ["c", "d"]
    assert list(fuse(dense, lexical, "convex", alpha=1.0).keys)[:3] == ["a", "b", "c"]


def test_convex_all_equal_scores_normalise_to_one():
    dense = ranking([("a", 0.3), ("b", 0.3)])
    lexical = ranking([("c", 4.2)])  # one document: its spread is 0 too
    assert as_dict(fuse(dense, lexical, "convex", alpha=0.25)) == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.75})


def test_negative_scores_normalise_like_any_others():
    dense = ranking([("a", -1.0), ("b", -3.0)])  # distances negated: nearer is better
    lexical = ranking([])
    assert as_dict(fuse(dense, lexical, "convex", alpha=0.5)) == pytest.approx({"a": 0.5, "b": 0.5 * LISTED_FLOOR},
                                                                               abs=1e-12)


@pytest.mark.parametrize("method", ["rrf", "convex"])
def test_empty_lists(method):
    empty = ranking([])
    both = fuse(empty, empty, method)
    assert list(both.keys) == [] and both.scores.shape == (0,)
    one = ranking([("a", 2.0), ("b", 1.0)])
    assert list(fuse(one, empty, method).keys) == ["a", "b"]
    assert list(fuse(empty, one, method).keys) == ["a", "b"]


def test_a_doc_in_only_one_list_is_kept():
    dense = ranking([("a", 0.9)])
    lexical = ranking([("b", 5.0), ("c", 1.0)])
    for method in ("rrf", "convex"):
        assert set(fuse(dense, lexical, method).keys) == {"a", "b", "c"}


def test_integer_row_keys_fuse_like_ids():
    dense = Ranking(np.asarray([4, 2], dtype=np.int64), np.asarray([0.9, 0.5]))
    lexical = Ranking(np.asarray([2, 7], dtype=np.int64), np.asarray([3.0, 1.0]))
    assert [int(k) for k in fuse(dense, lexical, "rrf").keys] == [2, 4, 7]


# -- alpha 1 / 0: one side alone (property) --------------------------------------------------------
DOCS = [f"d{i}" for i in range(12)]


@st.composite
def rankings(draw, distinct: bool = False) -> Ranking:
    keys = draw(st.lists(st.sampled_from(DOCS), unique=True, max_size=len(DOCS)))
    # Whole numbers: distinct ones stay distinct after min-max normalisation (1e-38 and 0 need not).
    scores = draw(st.lists(st.integers(-100, 100), min_size=len(keys), max_size=len(keys), unique=distinct))
    return Ranking(keys, np.sort(np.asarray(scores, dtype=np.float64))[::-1])  # a ranking: best first


def restricted(keys, to) -> list:
    allowed = set(to)
    return [k for k in keys if k in allowed]


@settings(max_examples=200, deadline=None)
@given(rankings(), rankings())
def test_convex_alpha_one_keeps_the_dense_order(dense, lexical):
    fused = fuse(dense, lexical, "convex", alpha=1.0)
    assert restricted(fused.keys, dense.keys) == list(dense.keys)
    assert set(fused.keys) == set(dense.keys) | set(lexical.keys)


@settings(max_examples=200, deadline=None)
@given(rankings(), rankings(distinct=True))
def test_convex_alpha_zero_keeps_the_lexical_order(dense, lexical):
    fused = fuse(dense, lexical, "convex", alpha=0.0)
    assert restricted(fused.keys, lexical.keys) == list(lexical.keys)


def test_convex_alpha_zero_breaks_lexical_ties_by_the_dense_order():
    # Documented: ties go to the dense list's order, so equal BM25 scores are ordered by the embedding.
    dense = ranking([("b", 0.9), ("a", 0.1)])
    lexical = ranking([("a", 2.0), ("b", 2.0), ("c", 1.0)])
    assert list(fuse(dense, lexical, "convex", alpha=0.0).keys) == ["b", "a", "c"]


@settings(max_examples=100, deadline=None)
@given(rankings(), rankings())
def test_fused_scores_are_sorted_and_every_doc_appears_once(dense, lexical):
    for method in ("rrf", "convex"):
        fused = fuse(dense, lexical, method, alpha=0.3)
        assert len(set(fused.keys)) == len(fused.keys) == len(set(dense.keys) | set(lexical.keys))
        assert np.all(np.diff(fused.scores) <= 0)


# -- check_fusion -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion_, alpha, rrf_k, shown", [
    ("convex", -0.1, 60, "-0.1"),
    ("convex", 1.5, 60, "1.5"),
    ("convex", True, 60, "True"),
    ("convex", "x", 60, "'x'"),
    ("convex", float("nan"), 60, "nan"),
    ("sum", 0.5, 60, "'sum'"),
    ("rrf", 0.5, 0, "0"),
    ("rrf", 0.5, -3, "-3"),
    ("rrf", 0.5, 2.5, "2.5"),
    ("rrf", 0.5, True, "True"),
])
def test_check_fusion_refuses_with_the_value_in_the_message(fusion_, alpha, rrf_k, shown):
    with pytest.raises(SampleError) as e:
        check_fusion(fusion_, alpha, rrf_k)
    assert shown in str(e.value)


def test_check_fusion_names_the_caller_and_returns_the_checked_values():
    with pytest.raises(SampleError, match="^evaluate: fusion must be one of"):
        check_fusion("sum", 0.5, 60, what="evaluate")
    assert check_fusion("convex", 1, 5) == ("convex", 1.0, 5)
    assert check_fusion("rrf", np.float64(0.25), 60) == ("rrf", 0.25, 60)


def test_check_fusion_accepts_numpy_numbers():
    # BUG: np.float32 / np.int64 are numbers in range, yet refused ("must be a number in [0, 1], got np.float32(0.5)");
    # an alpha from a numpy grid or a loaded config is refused with a message that contradicts itself.
    assert check_fusion("convex", np.float32(0.5), 60) == ("convex", 0.5, 60)
    assert check_fusion("rrf", 0.5, np.int64(10)) == ("rrf", 0.5, 10)


# -- FusionChoice -------------------------------------------------------------------------------------
def test_fusion_choice_round_trips_through_a_dict():
    choice = FusionChoice("convex", 0.35, 42, {"chosen": 0.8, "dense": 0.5, "lexical": 0.4})
    again = FusionChoice.from_dict(choice.to_dict())
    assert again == choice
    assert FusionChoice.from_dict({"method": "rrf", "alpha": 0.5, "rrf_k": 60}) == FusionChoice("rrf", 0.5, 60, {})


def test_fusion_choice_applies_its_method():
    dense = ranking([("a", 1.0), ("b", 0.0)])
    lexical = ranking([("b", 1.0), ("c", 0.5)])
    assert FusionChoice("dense", 1.0, 60, {}).apply(dense, lexical) is dense
    assert FusionChoice("lexical", 0.0, 60, {}).apply(dense, lexical) is lexical
    assert list(FusionChoice("convex", 0.2, 60, {}).apply(dense, lexical).keys) == list(
        fuse(dense, lexical, "convex", 0.2).keys)
    default = DEFAULT_FUSION  # whichever fusion it is, it applies as fuse() does
    assert default.method in ("rrf", "convex") and default.rrf_k == RRF_K
    assert list(default.apply(dense, lexical).keys) == list(
        fuse(dense, lexical, default.method, default.alpha, default.rrf_k).keys)


@pytest.mark.parametrize("choice, words", [
    (FusionChoice("dense", 1.0, 60, {"chosen": 0.7, "dense": 0.7, "lexical": 0.2}), "dense ranking alone"),
    (FusionChoice("lexical", 0.0, 60, {"chosen": 0.6}), "BM25 alone"),
    (FusionChoice("rrf", 0.5, 17, {"chosen": 0.9}), "RRF (k=17)"),
    (FusionChoice("convex", 0.35, 60, {"chosen": 0.9}), "convex fusion, alpha 0.35"),
])
def test_describe_names_the_chosen_method(choice, words):
    line = choice.describe()
    assert words in line and f"validation score {choice.validation['chosen']:.3f}" in line


# -- fit_fusion ---------------------------------------------------------------------------------------
def _copies(dense, lexical, relevant, n=5):
    """``n`` validation queries alike (each with its own ids, so nothing is shared between queries)."""
    ds, xs, rel = [], [], []
    for q in range(n):
        rename = lambda pairs, q=q: ranking([(f"q{q}{k}", s) for k, s in pairs])  # noqa: E731
        ds.append(rename(dense))
        xs.append(rename(lexical))
        rel.append({f"q{q}{relevant}": 1.0})
    return ds, xs, rel


def test_fit_keeps_the_dense_ranking_when_it_is_best():
    # The relevant doc is 2nd in the dense list and absent from BM25's; BM25's strong junk pushes it down in any fusion.
    dense = [("x", 1.0), ("rel", 0.99), ("y", 0.0)]
    lexical = [(f"j{i}", 10.0 - i) for i in range(12)]
    choice = fit_fusion(*_copies(dense, lexical, "rel"))
    assert choice.method == "dense" and choice.alpha == 1.0
    v = choice.validation
    assert v["chosen"] == v["dense"] > v["lexical"] == 0.0 and v["rrf"] < v["dense"]


def test_fit_keeps_bm25_alone_when_it_is_best():
    dense = [(f"j{i}", 1.0 - i / 20) for i in range(12)]
    lexical = [("rel", 9.0), ("x", 1.0)]
    choice = fit_fusion(*_copies(dense, lexical, "rel"))
    assert choice.method == "lexical" and choice.alpha == 0.0
    v = choice.validation
    assert v["chosen"] == v["lexical"] > v["dense"] == 0.0 and v["rrf"] < v["lexical"]


def _convex_wins():
    """Half the queries: the relevant doc 2nd by embedding, near the top score; half: 1st by BM25 only. Each side
    alone misses half; RRF ranks the first kind 3rd and the second 2nd (a rank-1 tie goes to the dense doc); convex
    fusion does better at either end (alpha ~0.05: 3rd and 1st; alpha > 0.53: 2nd and 2nd)."""
    a = _copies([("x", 1.0), ("rel", 0.9), ("y", 0.0), ("z", 0.0)], [("l1", 5.0), ("l2", 0.0)], "rel", n=4)
    b = _copies([("x", 1.0), ("y", 0.0), ("z", 0.0)], [("rel", 5.0), ("l2", 0.0)], "rel", n=4)
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


def test_fit_adopts_convex_fusion_when_it_is_clearly_best():
    choice = fit_fusion(*_convex_wins())
    assert choice.method == "convex" and 0.0 < choice.alpha < 1.0 and choice.alpha in fusion.ALPHA_GRID
    v = choice.validation
    assert v["chosen"] == v["best_convex"] > max(v["dense"], v["lexical"], v["rrf"]) + MIN_GAIN
    assert "convex fusion" in choice.describe()


def test_fit_adopts_rrf_when_ranks_matter_more_than_scores():
    # The relevant doc is 2nd on both sides with a score near the bottom: RRF lifts it to 1st, no convex mix does.
    dense = [("x", 1.0), ("rel", 0.01), ("y", 0.0)]
    lexical = [("l", 1.0), ("rel", 0.01), ("m", 0.0)]
    choice = fit_fusion(*_copies(dense, lexical, "rel"))
    assert choice.method == "rrf"
    v = choice.validation
    assert v["chosen"] == v["rrf"] > max(v["dense"], v["lexical"], v["best_convex"]) + MIN_GAIN


def test_fit_needs_the_gain_to_adopt_a_fusion(monkeypatch):
    # The same data as the convex win, but a gain larger than any possible makes the better single ranking stay.
    monkeypatch.setattr(fusion, "MIN_GAIN", 10.0)
    choice = fit_fusion(*_convex_wins())
    assert choice.method in ("dense", "lexical")
    v = choice.validation
    assert v["chosen"] == max(v["dense"], v["lexical"])


def test_fit_passes_its_rrf_k_on_and_a_tie_of_fusion_and_single_keeps_the_single():
    # Relevant doc 1st by embedding, absent from BM25: RRF ties (the dense doc wins ties), so dense stays.
    choice = fit_fusion(*_copies([("rel", 1.0), ("x", 0.5)], [("l", 2.0)], "rel"), rrf_k=7)
    assert choice.method == "dense" and choice.rrf_k == 7
    assert choice.validation["rrf"] == choice.validation["dense"]
