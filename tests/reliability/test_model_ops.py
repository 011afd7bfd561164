"""Stateful model check of the operations ``tests/core/test_model.py`` does not drive.

``tests/core/test_model.py`` already checks append/extend/update/pop, commits,
branches, old commits, reopen and deepcopy on a fixed schema. This machine adds:
creating and deleting tensors at any time (so tensors of different lengths),
single-tensor writes, rejected writes (must change nothing), ``with ds:`` batches
that mix everything, ``flush()`` inside a batch followed by an abort, a
read-only second handle, deepcopy followed by writes to the copy (the source
must not change), and ``vacuum(0)`` (every version must survive it). After
every step the live handle AND a fresh read-only handle from disk equal the
plain-Python model. TENSORDB_LONG=1 runs more and longer programs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tensordb
from tensordb.errors import ReadOnlyError, SampleError, TensorDBError

from .helpers import FIGURES, LONG

KINDS = {"int": {"dtype": "int32"}, "text": {"htype": "text"}, "json": {"htype": "json", "chunk_compression": "lz4"}}
VALUES = {
    "int": st.integers(-(2**31), 2**31 - 1),
    "text": st.none() | st.text(max_size=8),
    "json": st.none() | st.dictionaries(st.sampled_from("xyz"), st.integers(-9, 9) | st.text(max_size=3), max_size=2),
}
BAD = {"int": st.sampled_from(["a", {"x": 1}, 2**40, 1.5]), "text": st.sampled_from([1, b"x", ["a"]]),
       "json": st.sampled_from([1, "s", {"x": float("nan")}, {"x": object()}])}


def read(table) -> dict[str, list]:
    out = {}
    for name, t in table.tensors.items():
        values = t.numpy(aslist=True)
        out[name] = [int(np.asarray(v)) if t.htype == "generic" else v for v in values]
    return out


class OpsModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="tdb-ops-")
        self.path = os.path.join(self.root, "ds")
        self.n = 0

    @initialize()
    def create(self):
        self.ds = tensordb.empty(self.path)
        self.kinds: dict[str, str] = {}
        self.model: dict[str, list] = {}
        self.commits: dict[str, tuple[dict, dict]] = {}
        self.branches: dict[str, tuple[dict, dict]] = {}
        self._create("int")
        self._create("text")

    def teardown(self):
        if getattr(self, "ds", None) is not None:
            self.ds.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _create(self, kind: str) -> str:
        self.n += 1
        name = f"{kind}{self.n}"
        self.ds.create_tensor(name, max_chunk_size=1024, **KINDS[kind])
        self.kinds[name] = kind
        self.model[name] = []
        return name

    def _copy(self):
        return {k: list(v) for k, v in self.model.items()}, dict(self.kinds)

    def _equal_lengths(self) -> bool:
        return len({len(v) for v in self.model.values()}) <= 1

    def _row(self, data) -> dict:
        return {n: data.draw(VALUES[k], label=n) for n, k in self.kinds.items()}

    # -- schema ----------------------------------------------------------------------------------
    @rule(kind=st.sampled_from(sorted(KINDS)))
    def create_tensor(self, kind):
        self._create(kind)

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def delete_tensor(self, data):
        name = data.draw(st.sampled_from(sorted(self.model)), label="tensor")
        self.ds.delete_tensor(name)
        del self.model[name], self.kinds[name]

    # -- writes ----------------------------------------------------------------------------------
    @rule(data=st.data())
    def append_row(self, data):
        row = self._row(data)
        if self._equal_lengths():
            self.ds.append(row)
            for n, v in row.items():
                self.model[n].append(v)
        else:
            with pytest.raises(SampleError):
                self.ds.append(row)

    @rule(data=st.data())
    def tensor_extend(self, data):
        name = data.draw(st.sampled_from(sorted(self.model)), label="tensor")
        target = max(len(v) for v in self.model.values())
        count = data.draw(st.integers(0, max(3, target - len(self.model[name]))), label="count")
        values = [data.draw(VALUES[self.kinds[name]], label="v") for _ in range(count)]
        self.ds[name].extend(values)
        self.model[name] += values

    @rule(data=st.data())
    def bad_write(self, data):
        """A write with one bad value anywhere changes nothing."""
        name = data.draw(st.sampled_from(sorted(self.model)), label="tensor")
        good = [data.draw(VALUES[self.kinds[name]]) for _ in range(data.draw(st.integers(0, 3)))]
        bad = data.draw(BAD[self.kinds[name]], label="bad")
        values = good[:] + [bad] + good[:]
        with pytest.raises(TensorDBError):
            if self.model[name] and data.draw(st.booleans(), label="as update"):
                self.ds[name][[len(self.model[name]) - 1]] = [bad]
            else:
                self.ds[name].extend(values)
        FIGURES["model: rejected writes checked"] += 1

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def update(self, data):
        name = data.draw(st.sampled_from(sorted(n for n, v in self.model.items() if v)), label="tensor")
        n = len(self.model[name])
        rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4, unique=True), label="rows")
        values = [data.draw(VALUES[self.kinds[name]]) for _ in rows]
        self.ds[name][rows] = values
        for r, v in zip(rows, values):
            self.model[name][r] = v

    @precondition(lambda self: len(next(iter(self.model.values()), [])) > 0 and min(map(len, self.model.values())) > 0)
    @rule(data=st.data())
    def pop(self, data):
        n = min(len(v) for v in self.model.values())
        rows = set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3), label="rows"))
        self.ds.pop(sorted(rows))
        for name in self.model:
            self.model[name] = [v for i, v in enumerate(self.model[name]) if i not in rows]

    @rule(data=st.data(), flush_after=st.integers(0, 4), abort=st.booleans())
    def batch(self, data, flush_after, abort):
        """A mixed ``with ds:`` batch; an abort after ``flush()`` keeps exactly what was flushed."""
        kept = self._copy()
        try:
            with self.ds:
                for step in range(4):
                    if step == flush_after:
                        self.ds.flush()
                        kept = self._copy()
                    what = data.draw(st.sampled_from(["extend", "create", "update"]), label="what")
                    if what == "create":
                        self._create(data.draw(st.sampled_from(sorted(KINDS))))
                    elif what == "update" and any(self.model.values()):
                        name = data.draw(st.sampled_from(sorted(n for n, v in self.model.items() if v)))
                        value = data.draw(VALUES[self.kinds[name]])
                        self.ds[name][0] = value
                        self.model[name][0] = value
                    else:
                        name = data.draw(st.sampled_from(sorted(self.model)))
                        value = data.draw(VALUES[self.kinds[name]])
                        self.ds[name].append(value)
                        self.model[name].append(value)
                if abort:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.model, self.kinds = kept

    # -- versions --------------------------------------------------------------------------------
    @rule()
    def commit(self):
        cid = self.ds.commit("m")
        self.commits[cid] = self._copy()

    @rule()
    def branch(self):
        self.branches[self.ds.branch] = self._copy()
        self.n += 1
        self.ds.checkout(f"b{self.n}", create=True)

    @precondition(lambda self: self.branches)
    @rule(data=st.data())
    def switch(self, data):
        name = data.draw(st.sampled_from(sorted(self.branches)), label="branch")
        self.branches[self.ds.branch] = self._copy()
        self.ds.checkout(name)
        self.model, self.kinds = self.branches.pop(name)

    @precondition(lambda self: self.commits)
    @rule(data=st.data())
    def old_commit_read_only(self, data):
        cid = list(self.commits)[data.draw(st.integers(0, len(self.commits) - 1), label="commit")]
        old = tensordb.load(f"{self.path}@{cid}", read_only=True)
        assert read(old) == self.commits[cid][0]
        with pytest.raises(ReadOnlyError):
            old.create_tensor("zz")

    @rule(read_only=st.booleans())
    def reopen(self, read_only):
        branch = self.ds.branch
        self.ds.close()
        if read_only:
            ro = tensordb.load(f"{self.path}@{branch}", read_only=True)
            assert read(ro) == self.model
            with pytest.raises(ReadOnlyError):
                ro.pop()
        self.ds = tensordb.load(f"{self.path}@{branch}")

    @rule(data=st.data())
    def deepcopy_then_write_copy(self, data):
        dest = os.path.join(self.root, f"copy{uuid.uuid4().hex[:6]}")
        copy = tensordb.deepcopy(self.path, dest, progress=False)
        copy.checkout(self.ds.branch)
        assert read(copy) == self.model
        name = data.draw(st.sampled_from(sorted(self.model)), label="tensor")
        copy[name].append(data.draw(VALUES[self.kinds[name]]))
        copy.commit("copy only")
        copy.close()
        shutil.rmtree(dest)

    @rule()
    def vacuum(self):
        self.ds.vacuum(grace_seconds=0)
        for cid, (snap, _) in list(self.commits.items())[-3:]:
            assert read(tensordb.load(f"{self.path}@{cid}", read_only=True)) == snap

    @invariant()
    def matches(self):
        if getattr(self, "ds", None) is None:
            return
        assert read(self.ds) == self.model
        assert read(tensordb.load(f"{self.path}@{self.ds.branch}", read_only=True)) == self.model
        FIGURES["model: steps checked"] += 1


OpsModel.TestCase.settings = settings(
    max_examples=200 if LONG else 40,
    stateful_step_count=60 if LONG else 30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
TestOpsModel = OpsModel.TestCase
