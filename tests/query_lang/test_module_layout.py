"""query_lang's modules each do one job and import only public names, never tensordb."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import numpy as np
import pytest

import query_lang
from query_lang.cache import BoundedCache
from query_lang.derived import DERIVED_CACHE, DerivedCache

PACKAGE = Path(query_lang.__file__).parent


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / name).read_text())


def _top_level_names(name: str) -> set[str]:
    out = set()
    for node in _tree(name).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


@pytest.mark.parametrize("path", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_no_private_name_is_imported_and_tensordb_never_is(path):
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("tensordb"), f"{path} imports {node.module}"
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path} imports private {private} from {node.module}"
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("tensordb") for a in node.names), path


def test_binder_only_binds():
    names = _top_level_names("binder.py")
    assert {"bind", "binary", "Scope", "make_node", "boolop_kernel"} <= names
    assert not names & {"evaluate", "_run", "EvalContext", "DerivedCache", "DERIVED_CACHE", "BExpr"}
    assert {"BExpr", "EvalContext", "evaluate", "run_kernel"} <= _top_level_names("evaluate.py")


def test_the_derived_value_cache_is_a_bounded_cache():
    assert isinstance(DERIVED_CACHE.entries, BoundedCache)
    cache = DerivedCache(maxsize=3, max_bytes=10_000)
    cache.put("ints", [1, None, 3])
    assert cache.get("ints") == [1, None, 3]  # packed into arrays, unpacked on a hit
    cache.put("none", None)
    assert cache.get("none") is None and len(cache) == 1
    cache.put("huge", np.zeros(100_000))
    assert cache.get("huge") is None  # over the byte budget: refused
    for i in range(5):
        cache.put(i, np.zeros(4))
    assert len(cache) == 3 and cache.nbytes <= 10_000


def test_the_derived_value_cache_counts_bytes_exactly_under_threads():
    cache = DerivedCache(maxsize=16, max_bytes=4_000)

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(2000):
            key = int(rng.integers(40))
            if rng.random() < 0.5:
                cache.put(key, np.zeros(int(rng.integers(1, 60))))
            else:
                cache.get(key)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [cache.get(k) for k in cache.entries.keys()]
    assert cache.nbytes == sum(v.nbytes + 64 for v in held) <= 4_000
    assert len(cache) <= 16


@pytest.mark.parametrize("path", sorted(p.name for p in PACKAGE.glob("*.py")))
def test_no_function_is_longer_than_fifty_lines(path):
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(_tree(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50]
    assert not long, f"{path}: split {long} into named steps"
