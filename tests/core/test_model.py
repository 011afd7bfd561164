"""Model-based test: a dataset with tiny chunks against a plain-Python model (dict of lists).

Every step applies the same operation to both and compares full contents. Set
TENSORDB_LONG=1 for a longer run.
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
from tensordb.errors import IndexOutOfRangeError, ReadOnlyError

from .helpers import canon, snapshot

LONG = os.environ.get("TENSORDB_LONG") == "1"
TENSORS = ("a", "t", "j", "e")
DIM = 3

ints = st.lists(st.integers(-(2**15), 2**15 - 1), max_size=4)
a_values = st.none() | ints  # rows of rank 1, some empty
t_values = st.none() | st.text(max_size=12)
j_values = st.none() | st.dictionaries(st.sampled_from("abc"), st.integers(-5, 5) | st.text(max_size=3), max_size=2)
e_values = st.lists(st.floats(-100, 100, width=32), min_size=DIM, max_size=DIM)
rows_st = st.fixed_dictionaries({"a": a_values, "t": t_values, "j": j_values, "e": e_values})


def model_value(name, v):
    if name == "a":
        return canon(np.zeros(0, "int16") if v is None else np.asarray(v, "int16"))
    if name == "e":
        return canon(np.asarray(v, "float32"))
    return v


class DatasetModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="tdb-model-")
        self.path = os.path.join(self.root, "ds")
        self.copies = 0

    @initialize(where=st.sampled_from(["memory", "memory", "local"]))
    def create(self, where):
        # local directories pay for real fsyncs: most examples run in memory, the same code paths above the store
        if where == "memory":
            self.path = f"mem://model-{uuid.uuid4().hex}"
        ds = tensordb.empty(self.path)
        ds.create_tensor("a", dtype="int16", max_chunk_size=1024)
        ds.create_tensor("t", htype="text", max_chunk_size=1024)
        ds.create_tensor("j", htype="json", chunk_compression="lz4", max_chunk_size=1024)
        ds.create_tensor("e", htype="embedding", max_chunk_size=1024)
        self.ds = ds
        self.model = {n: [] for n in TENSORS}
        # Draws pick by insertion order, never by (random) id or name: a replayed run must draw alike.
        self.commits: dict[str, dict] = {}  # commit id -> model snapshot
        self.branch_models = {}

    def teardown(self):
        ds = getattr(self, "ds", None)
        if ds is not None:
            ds.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _copy(self):
        return {k: list(v) for k, v in self.model.items()}

    # -- writes --------------------------------------------------------------------------------
    @rule(rows=st.lists(rows_st, min_size=1, max_size=12))
    def extend(self, rows):
        self.ds.extend({n: [r[n] for r in rows] for n in TENSORS})
        for n in TENSORS:
            self.model[n] += [model_value(n, r[n]) for r in rows]

    @rule(row=rows_st)
    def append(self, row):
        self.ds.append(row)
        for n in TENSORS:
            self.model[n].append(model_value(n, row[n]))

    @precondition(lambda self: len(self.model["a"]) > 0)
    @rule(data=st.data())
    def update(self, data):
        n = len(self.model["a"])
        idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5, unique=True), label="idx")
        names = data.draw(st.lists(st.sampled_from(TENSORS), min_size=1, max_size=4, unique=True), label="names")
        strategies = {"a": a_values, "t": t_values, "j": j_values, "e": e_values}
        values = {name: [data.draw(strategies[name], label=name) for _ in idx] for name in names}
        if len(idx) == 1 and data.draw(st.booleans(), label="setitem"):
            name = names[0]
            self.ds[name][idx[0]] = values[name][0]
            names = [name]
        else:
            self.ds.update(idx, values)
        for name in names:
            for i, v in zip(idx, values[name]):
                self.model[name][i] = model_value(name, v)

    @precondition(lambda self: len(self.model["a"]) > 0)
    @rule(data=st.data())
    def pop(self, data):
        n = len(self.model["a"])
        kind = data.draw(st.sampled_from(["none", "int", "list"]), label="kind")
        if kind == "none":
            self.ds.pop()
            drop = {n - 1}
        elif kind == "int":
            i = data.draw(st.integers(-n, n - 1), label="i")
            self.ds.pop(i)
            drop = {i % n}
        else:
            idx = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6), label="idx")
            self.ds.pop(idx)
            drop = set(idx)
        for name in TENSORS:
            self.model[name] = [v for i, v in enumerate(self.model[name]) if i not in drop]

    @rule(rows=st.lists(rows_st, min_size=1, max_size=4), fail=st.booleans())
    def batch(self, rows, fail):
        """Several calls in one ``with ds:`` step; an exception discards all of them."""
        before = self._copy()
        try:
            with self.ds:
                for r in rows:
                    self.ds.append(r)
                    for n in TENSORS:
                        self.model[n].append(model_value(n, r[n]))
                if len(self.model["a"]) > 1:
                    self.ds.pop(0)
                    for n in TENSORS:
                        del self.model[n][0]
                if fail:
                    raise KeyboardInterrupt("abort the batch")
        except KeyboardInterrupt:
            self.model = before

    # -- versions ------------------------------------------------------------------------------
    @rule(message=st.text(max_size=10))
    def commit(self, message):
        cid = self.ds.commit(message)
        assert self.ds.commit_id == cid
        self.commits[cid] = self._copy()
        assert self.ds.log(show=False)[0]["message"] == message

    @rule()
    def new_branch(self):
        name = f"b{uuid.uuid4().hex[:8]}"
        self.branch_models[self.ds.branch] = self._copy()
        self.ds.checkout(name, create=True)
        assert self.ds.branch == name

    @precondition(lambda self: len(self.branch_models) > 0)
    @rule(data=st.data())
    def switch_branch(self, data):
        name = data.draw(st.sampled_from(list(self.branch_models)), label="branch")
        self.branch_models[self.ds.branch] = self._copy()
        self.ds.checkout(name)
        self.model = self.branch_models.pop(name)
        assert self.ds.branch == name

    @precondition(lambda self: len(self.commits) > 0)
    @rule(data=st.data())
    def visit_commit(self, data):
        cid = data.draw(st.sampled_from(list(self.commits)), label="commit")
        branch = self.ds.branch
        self.ds.checkout(cid)
        assert self.ds.branch is None and self.ds.commit_id == cid and self.ds.read_only
        assert snapshot(self.ds) == self.commits[cid]
        with pytest.raises(ReadOnlyError):
            self.ds.append({"a": 1, "t": "x", "j": None, "e": [0.0] * DIM})
        with pytest.raises(ReadOnlyError):
            self.ds.pop()
        assert snapshot(self.ds) == self.commits[cid]
        self.ds.checkout(branch)

    @precondition(lambda self: len(self.commits) > 0)
    @rule(data=st.data())
    def time_travel(self, data):
        cid = data.draw(st.sampled_from(list(self.commits)), label="commit")
        old = tensordb.load(f"{self.path}@{cid}", read_only=True)
        assert snapshot(old) == self.commits[cid]

    @rule()
    def reopen(self):
        branch = self.ds.branch
        self.ds.close()
        self.ds = tensordb.load(f"{self.path}@{branch}")
        assert self.ds.branch == branch

    @rule(local=st.booleans())
    def deepcopy(self, local):
        self.copies += 1
        dest = os.path.join(self.root, f"copy{self.copies}") if local else f"mem://model-copy-{uuid.uuid4().hex}"
        copy = tensordb.deepcopy(self.path, dest, progress=False)
        try:
            if self.ds.branch != "main":
                copy.checkout(self.ds.branch)
            assert snapshot(copy) == self.model
            for cid, snap in list(self.commits.items())[:3]:
                copy.checkout(cid)
                assert snapshot(copy) == snap
        finally:
            copy.close()

    # -- reads ---------------------------------------------------------------------------------
    @precondition(lambda self: len(self.model["a"]) > 0)
    @rule(data=st.data())
    def slice_view(self, data):
        n = len(self.model["a"])
        start = data.draw(st.integers(-n, n), label="start")
        stop = data.draw(st.none() | st.integers(-n, n), label="stop")
        step = data.draw(st.sampled_from([None, 1, 2, 3]), label="step")
        view = self.ds[start:stop:step]
        expected = {k: v[start:stop:step] for k, v in self.model.items()}
        assert len(view) == len(expected["a"])
        assert snapshot(view) == expected

    @precondition(lambda self: len(self.model["a"]) > 0)
    @rule(data=st.data())
    def list_view(self, data):
        n = len(self.model["a"])
        idx = data.draw(st.lists(st.integers(-n, n - 1), max_size=8), label="idx")
        view = self.ds[idx]
        assert snapshot(view) == {k: [v[i] for i in idx] for k, v in self.model.items()}
        if idx:
            sub = data.draw(st.integers(0, len(idx) - 1), label="sub")
            assert snapshot(view[[sub]]) == {k: [v[idx[sub]]] for k, v in self.model.items()}
        with pytest.raises(IndexOutOfRangeError):
            self.ds[[0, n]]

    @invariant()
    def contents_match(self):
        if not hasattr(self, "ds"):
            return
        assert len(self.ds) == len(self.model["a"])
        assert snapshot(self.ds) == self.model


DatasetModel.TestCase.settings = settings(
    max_examples=200 if LONG else 25,
    stateful_step_count=60 if LONG else 30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
TestDatasetModel = DatasetModel.TestCase


def test_model_final_state_verifies(tmp_path):
    """A fixed, longer random walk (no shrinking) ending with verify and vacuum."""
    rng = np.random.default_rng(1234)
    ds = tensordb.empty(str(tmp_path / "ds"))
    ds.create_tensor("a", dtype="int16", max_chunk_size=1024)
    model = []
    for step in range(200):
        op = rng.choice(["extend", "update", "pop", "commit"], p=[0.4, 0.3, 0.2, 0.1])
        if op == "extend" or not model:
            vals = [rng.integers(-100, 100, size=rng.integers(0, 4)).tolist() for _ in range(rng.integers(1, 20))]
            ds.extend({"a": vals})
            model += [canon(np.asarray(v, "int16")) for v in vals]
        elif op == "update":
            i = int(rng.integers(len(model)))
            v = rng.integers(-100, 100, size=2).tolist()
            ds.a[i] = v
            model[i] = canon(np.asarray(v, "int16"))
        elif op == "pop":
            i = int(rng.integers(len(model)))
            ds.pop(i)
            del model[i]
        else:
            ds.commit(f"step {step}")
        assert snapshot(ds)["a"] == model
    assert ds.verify().ok
    ds.vacuum(grace_seconds=0)
    assert ds.verify().ok
    assert snapshot(ds)["a"] == model
    for entry in ds.log(show=False):
        assert tensordb.load(f"{ds.path}@{entry['commit']}", read_only=True).verify().ok
