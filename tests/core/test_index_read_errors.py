"""An index file that cannot be read right now is tried again; a damaged one stays refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tensordb
from tensordb.core import index_catalog
from tensordb.errors import StorageError
from tensordb.storage import LocalStore


def _dataset(path):
    ds = tensordb.empty(path)
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.extend({"embedding": np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)})
    ds.embedding.create_index("flat", kind="flat", metric="cosine")
    return ds


def _top(ds, **kwargs):
    return ds.query("select * order by cosine_similarity(embedding, ARRAY[1, 0, 0, 0]) desc limit 4",
                    **kwargs).score.numpy()


def test_a_transient_read_error_does_not_disable_the_index(tmp_path, monkeypatch):
    ds = _dataset(str(tmp_path / "ds"))
    index_catalog.LOADED.clear()
    original, failures = LocalStore.map, []

    def flaky(self, key):
        if key.startswith("indexes/") and not failures:
            failures.append(key)
            raise StorageError(f"{self.url}: reading {key!r} failed: connection reset")
        return original(self, key)

    monkeypatch.setattr(LocalStore, "map", flaky)
    with pytest.warns(RuntimeWarning, match="could not be read.*tries again"):
        first = _top(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second query loads the index, with no warning
        second = _top(ds)
    assert failures and ds.embedding.indexes["flat"]["rows"] == 200
    assert any(key[1] == ds._state.indexes["flat"].key and value is not None
               for key, value in index_catalog.LOADED._entries.items())
    # The exact scan divides by the stored row norms, the index path by norms it computes: float32 apart.
    np.testing.assert_allclose(first, _top(ds, exact=True), rtol=1e-6)
    np.testing.assert_allclose(second, first, rtol=1e-6)
