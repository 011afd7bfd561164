"""Refactoring train_model changed no number: same seed, same problem → bit-identical model and rankings.

``data/training_golden.npz`` was written by ``training_golden.py`` under the code from before
the training refactor (``PYTHONPATH=<that checkout> python training_golden.py data/training_golden.npz``);
it covers the hold-out split with refit, k-fold cross-validation, hard-negative mining, and
``score_block`` under each combination of its arguments.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _golden_module():
    spec = importlib.util.spec_from_file_location("training_golden", os.path.join(HERE, "training_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def arrays() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(os.path.join(HERE, "data", "training_golden.npz")) as saved:
        before = {k: saved[k] for k in saved.files}
    return before, _golden_module().arrays()


#: Float arrays match to float32 rounding: on the CPU that wrote the file they are bit-identical, but
#: another CPU's BLAS kernels (AVX2 against AVX-512, say) round the last bit of some sums differently
#: (up to 4e-7 seen on an AMD EPYC). Any real change to training moves them by orders of magnitude more.
FLOAT_RTOL, FLOAT_ATOL = 1e-5, 1e-6


def test_every_array_is_identical_to_before_the_refactor(arrays) -> None:
    before, now = arrays
    assert sorted(now) == sorted(before)
    different = [k for k in before if before[k].dtype != now[k].dtype or not _same(before[k], now[k])]
    assert not different, different


def _same(before: np.ndarray, now: np.ndarray) -> bool:
    if before.dtype.kind == "f":
        return before.shape == now.shape and np.allclose(now, before, rtol=FLOAT_RTOL, atol=FLOAT_ATOL)
    return np.array_equal(before, now)


def test_the_golden_cases_train_real_models(arrays) -> None:
    before, _ = arrays
    for case in ("holdout_refit", "cross_validation", "hard_negatives"):
        improved, best_epoch, refitted = before[f"{case}/facts"][:3]
        assert improved and best_epoch > 0 and refitted, case
        assert not np.array_equal(before[f"{case}/A"], np.eye(before[f"{case}/A"].shape[0], dtype=np.float32))
