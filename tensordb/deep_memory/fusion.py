"""Hybrid search: one ranking from a dense (vector) and a lexical (BM25) ranking, and learning how to fuse them.

Two fusions:

* **rrf**, reciprocal rank fusion: ``sum over lists of 1 / (rrf_k + rank)``, ranks from 1. It needs
  no score scale, but ignores how far apart the scores are.
* **convex**: ``alpha * dense + (1 - alpha) * lexical``, each list's scores min-max normalised to
  [``LISTED_FLOOR``, 1] (a list whose scores are all equal normalises to 1); a document missing
  from one list counts 0 there, below every listed one. ``alpha = 1`` is the dense ranking, and
  ``alpha = 0`` the lexical one, each followed by the documents only the other list holds.

:func:`fit_fusion` chooses, on labelled validation queries, between the dense ranking alone,
the lexical one alone, RRF and convex fusion at each alpha of a grid. A fusion is adopted only
if it beats both single rankings; otherwise the better single ranking is kept.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SampleError
from .metrics import evaluate_rankings

FUSIONS = ("rrf", "convex")
#: RRF's rank constant, as in Cormack et al. (2009) and LanceDB.
RRF_K = 60
DEFAULT_ALPHA = 0.5
#: The alphas :func:`fit_fusion` tries.
ALPHA_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))
#: How much a fusion must beat both single rankings by (on validation) to be adopted.
MIN_GAIN = 1e-3
#: What a list's lowest score normalises to: above 0, what a document the list does not hold counts.
LISTED_FLOOR = 1e-6


@dataclass(frozen=True)
class Ranking:
    """Documents (row positions or ids), best first, with their scores (higher is better)."""

    keys: Sequence[Hashable]
    scores: np.ndarray


def check_fusion(fusion: Any, alpha: Any, rrf_k: Any, what: str = "search") -> tuple[str, float, int]:
    """``(fusion, alpha, rrf_k)`` checked; :class:`SampleError` saying what is wrong otherwise."""
    if fusion not in FUSIONS:
        raise SampleError(f"{what}: fusion must be one of {list(FUSIONS)}, got {fusion!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) <= 1.0:
        raise SampleError(f"{what}: alpha must be a number in [0, 1] (1: dense only, 0: text only), got {alpha!r}")
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, numbers.Integral) or rrf_k < 1:
        raise SampleError(f"{what}: rrf_k must be a positive integer, got {rrf_k!r}")
    return fusion, float(alpha), int(rrf_k)


def fuse(dense: Ranking, lexical: Ranking, fusion: str = "rrf", alpha: float = DEFAULT_ALPHA,
         rrf_k: int = RRF_K) -> Ranking:
    """The fused ranking of every document in either list (ties: the dense list's order, then the lexical's)."""
    if fusion == "rrf":
        scores = _rrf(dense, rrf_k), _rrf(lexical, rrf_k)
        weights = (1.0, 1.0)
    else:
        scores = _normalised(dense), _normalised(lexical)
        weights = (alpha, 1.0 - alpha)
    fused: dict[Hashable, float] = {}
    for side, weight in zip(scores, weights, strict=True):
        for key, score in side.items():
            fused[key] = fused.get(key, 0.0) + weight * score
    order = sorted(fused, key=lambda key: -fused[key])  # stable: first-seen order breaks ties
    return Ranking(order, np.asarray([fused[k] for k in order], dtype=np.float64))


def _rrf(ranking: Ranking, rrf_k: int) -> dict[Hashable, float]:
    return {key: 1.0 / (rrf_k + rank) for rank, key in enumerate(ranking.keys, start=1)}


def _normalised(ranking: Ranking) -> dict[Hashable, float]:
    scores = np.asarray(ranking.scores, dtype=np.float64)
    if not len(scores):
        return {}
    low, high = float(np.min(scores)), float(np.max(scores))
    spread = high - low
    if spread <= 0 or not math.isfinite(spread):
        values = np.ones(len(scores))
    else:
        values = LISTED_FLOOR + (1 - LISTED_FLOOR) * (scores - low) / spread
    return dict(zip(ranking.keys, values.tolist(), strict=True))


@dataclass(frozen=True)
class FusionChoice:
    """What hybrid search with a trained model uses: ``"dense"``, ``"lexical"``, ``"rrf"`` or ``"convex"`` at
    ``alpha``; ``validation`` holds every candidate's validation score (mean of nDCG@10 and recall@10)."""

    method: str
    alpha: float
    rrf_k: int
    validation: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "alpha": self.alpha, "rrf_k": self.rrf_k, "validation": self.validation}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FusionChoice:
        return cls(str(d["method"]), float(d["alpha"]), int(d["rrf_k"]), dict(d.get("validation", {})))

    def apply(self, dense: Ranking, lexical: Ranking) -> Ranking:
        if self.method == "dense":
            return dense
        if self.method == "lexical":
            return lexical
        return fuse(dense, lexical, self.method, self.alpha, self.rrf_k)

    def describe(self) -> str:
        """One line for ``status``."""
        chosen = {"dense": "Deep Memory's dense ranking alone", "lexical": "BM25 alone",
                  "rrf": f"RRF (k={self.rrf_k})", "convex": f"convex fusion, alpha {self.alpha:g}"}[self.method]
        v = self.validation
        return (f"{chosen}; validation score {v.get('chosen', 0):.3f} (dense {v.get('dense', 0):.3f}, "
                f"BM25 {v.get('lexical', 0):.3f})")


#: What hybrid search does without a learned fusion: on SciFact dev, convex fusion at 0.5 kept every metric
#: at or above the better of dense and BM25, while RRF lost 3.9 points of recall@1 to BM25 (it sees only ranks).
DEFAULT_FUSION = FusionChoice("convex", DEFAULT_ALPHA, RRF_K, {})


def fusion_or_default(learned: Mapping[str, Any] | None) -> FusionChoice:
    """The fusion a model's metadata holds (``model.metadata.get("fusion")``), or the default without one."""
    return DEFAULT_FUSION if not learned else FusionChoice.from_dict(learned)


def fit_fusion(dense: Sequence[Ranking], lexical: Sequence[Ranking], relevance: Sequence[Mapping[str, float]],
               rrf_k: int = RRF_K) -> FusionChoice:
    """The fusion that ranks these validation queries best (rankings keyed by document id)."""

    def score(rankings: list[list[Hashable]]) -> float:
        m = evaluate_rankings([[str(k) for k in r] for r in rankings], list(relevance), (10,))
        return 0.5 * m["ndcg@10"] + 0.5 * m["recall@10"]

    candidates: dict[str, tuple[str, float]] = {"dense": ("dense", 1.0), "lexical": ("lexical", 0.0),
                                                 "rrf": ("rrf", DEFAULT_ALPHA)}
    candidates.update({f"convex@{a:g}": ("convex", float(a)) for a in ALPHA_GRID if 0.0 < a < 1.0})
    validation = {}
    for name, (method, alpha) in candidates.items():
        choice = FusionChoice(method, alpha, rrf_k, {})
        validation[name] = score([list(choice.apply(d, x).keys) for d, x in zip(dense, lexical, strict=True)])
    fused = max((n for n in candidates if n not in ("dense", "lexical")), key=lambda n: validation[n])
    single = "dense" if validation["dense"] >= validation["lexical"] else "lexical"
    best = fused if validation[fused] > max(validation["dense"], validation["lexical"]) + MIN_GAIN else single
    method, alpha = candidates[best]
    summary = {"chosen": validation[best], "dense": validation["dense"], "lexical": validation["lexical"],
               "rrf": validation["rrf"], "best_convex": max(v for n, v in validation.items() if n.startswith("convex"))}
    return FusionChoice(method, alpha, rrf_k, {k: round(v, 6) for k, v in summary.items()})
