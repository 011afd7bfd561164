"""The contents of the small dataset that each release writes into ``tests/compat/datasets/``.

Run ``python -m tests.compat.release_dataset VERSION`` with a release installed to write
its dataset; ``test_release_datasets.py`` opens every stored one with today's code and
checks it against :func:`expected_rows`. Written once per release, never rewritten.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import tensordb

DATASETS_DIR = os.path.join(os.path.dirname(__file__), "datasets")
FIRST_ROWS = 6
SECOND_ROWS = 4
DIM = 8
#: The indexes the second commit holds, by the release that first wrote them.
INDEXES = {"vec": "flat", "meta": "json"}
TEXT_INDEXES = {"fts": "bm25"}  # since 0.4.0


def expected_rows(n: int) -> dict[str, list]:
    """Row values 0..n-1 of every tensor, as a deterministic function of the row number."""
    return {
        "text": [f"chunk {i}: caf\u00e9 \u2603" for i in range(n)],
        "metadata": [{"group": i % 3, "tags": ["a", str(i)], "score": i / 4} for i in range(n)],
        "embedding": [np.random.default_rng(i).standard_normal(DIM).astype(np.float32) for i in range(n)],
        "id": [f"doc-{i}" for i in range(n)],
        "label": [["cat", "dog"][i % 2] for i in range(n)],
        "sizes": [np.arange(i + 1, dtype=np.int32) for i in range(n)],
    }


def write(path: str) -> None:
    """The release's dataset: two commits on main (the second with a vector and a json index, from 0.3.0,
    and a bm25 index, from 0.4.0),
    a branch with one more row, and a record attachment."""
    ds = tensordb.empty(path)
    ds.create_tensor("text", htype="text")
    ds.create_tensor("metadata", htype="json", chunk_compression="lz4")
    ds.create_tensor("embedding", htype="embedding", dtype="float32")
    ds.create_tensor("id", htype="id")
    ds.create_tensor("label", htype="class_label", class_names=["cat", "dog"])
    ds.create_tensor("sizes", htype="generic", dtype="int32")
    rows = expected_rows(FIRST_ROWS + SECOND_ROWS)
    ds.extend({name: values[:FIRST_ROWS] for name, values in rows.items()})
    ds.commit("first")
    ds.extend({name: values[FIRST_ROWS:] for name, values in rows.items()})
    ds.embedding.create_index("vec", kind="flat", metric="cosine")  # since 0.3.0: indexes
    ds.metadata.create_index("meta", kind="json", paths=["group"])
    ds.text.create_index("fts", kind="bm25", language="english")  # since 0.4.0: full-text indexes
    ds.commit("second")
    ds.checkout("side", create=True)
    ds.pop(0)
    ds.commit("side drops row 0")
    ds.checkout("main")
    ds.put_attachment("notes/readme", {"written_by": tensordb.__version__}, {"ones": np.ones(3, np.float32)})
    ds.close()


if __name__ == "__main__":
    version = sys.argv[1] if len(sys.argv) > 1 else tensordb.__version__
    target = os.path.join(DATASETS_DIR, f"v{version}")
    if os.path.exists(target):
        sys.exit(f"{target} exists: a release's dataset is written once")
    write(target)
    print(f"wrote {target}")
