"""Vector index kinds (tensordb.indexes.vector): recall against numpy, filtered search, the byte form and its
validation against forged files, and typed errors."""

from __future__ import annotations

import json
import struct

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensordb.errors import DataCorruptionError, IndexDefinitionError
from tensordb.indexes.vector import (
    ALL_SEARCH_PARAMS,
    METRICS,
    VECTOR_KINDS,
    VectorIndex,
    build_vector_index,
    check_search_params,
    num_threads,
    search_param_names,
    vector_spec,
)

ROWS, DIM, K = 5000, 32, 10
# ivf_pq at the default m (dim/4) trades recall for size; m=32 shows the index works at recall >= 0.9.
TEST_PARAMS = {"flat": {}, "hnsw": {}, "ivf_pq": {"m": 32}, "ivf_sq": {}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """faiss's OpenMP threads contend badly on a shared 2-core test machine; one thread keeps the file fast
    (and runs every build and search through TENSORDB_NUM_THREADS)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TENSORDB_NUM_THREADS", "1")
        yield


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """n points around the same 20 centres (fixed per dim); seed picks the points."""
    centers = np.random.default_rng(dim).normal(size=(20, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


VECTORS = clustered(ROWS, DIM, seed=0)
QUERIES = clustered(50, DIM, seed=1)


def exact_scores(metric: str, queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Higher is better for every metric (l2 negated)."""
    q, x = queries.astype(np.float64), vectors.astype(np.float64)
    if metric == "l2":
        return -((q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None, :])
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    return q @ x.T


def exact_top(metric: str, allowed: np.ndarray | None = None, k: int = K) -> np.ndarray:
    scores = exact_scores(metric, QUERIES, VECTORS)
    if allowed is not None:
        scores = np.where(allowed[None, :], scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


_BUILT: dict[tuple[str, str], VectorIndex] = {}


def built(kind: str, metric: str) -> VectorIndex:
    """One index per (kind, metric) for the whole file: building ivf_pq is the slow part."""
    if (kind, metric) not in _BUILT:
        spec = vector_spec(kind, metric, DIM, TEST_PARAMS[kind], ROWS)
        _BUILT[kind, metric] = build_vector_index(spec, VECTORS)
    return _BUILT[kind, metric]


def patched(data: np.ndarray, old: bytes, new: bytes) -> np.ndarray:
    """``data`` with the one occurrence of ``old`` replaced by ``new``."""
    raw = bytearray(data.tobytes())
    at = raw.find(old)
    assert at >= 0 and raw.find(old, at + 1) == -1, "the bytes to forge must occur exactly once"
    raw[at:at + len(old)] = new
    return np.frombuffer(bytes(raw), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ recall


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_recall_against_numpy(kind, metric):
    index = built(kind, metric)
    assert index.ntotal == ROWS
    ids, scores = index.search(QUERIES, K)
    assert ids.shape == scores.shape == (len(QUERIES), K)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    truth = exact_top(metric)
    if kind == "flat":
        np.testing.assert_array_equal(ids, truth)
    else:
        assert recall(ids, truth) >= 0.9
    ordered = np.diff(scores, axis=1)
    assert np.all(ordered >= 0) if metric == "l2" else np.all(ordered <= 0)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_scores_are_the_metric(kind, metric):
    """cosine / dot: the similarity; l2: the squared distance. Exact for flat and hnsw, close for IVF."""
    ids, scores = built(kind, metric).search(QUERIES, K)
    expected = np.take_along_axis(exact_scores(metric, QUERIES, VECTORS), ids, axis=1)
    if metric == "l2":
        expected = -expected
    if kind in ("flat", "hnsw"):
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    else:
        spread = np.abs(expected).mean()
        assert np.abs(scores - expected).mean() < 0.05 * spread


def test_cosine_keeps_zero_rows_zero():
    vectors = VECTORS[:100].copy()
    vectors[7] = 0
    index = build_vector_index(vector_spec("flat", "cosine", DIM, {}, 100), vectors)
    ids, scores = index.search(QUERIES[:3], 100)
    assert np.all(scores[ids == 7] == 0)
    zero_ids, zero_scores = index.search(np.zeros((1, DIM), np.float32), 5)
    assert np.all(zero_scores == 0) and np.all(zero_ids >= 0)


def test_build_reads_a_read_only_memmap(tmp_path):
    path = tmp_path / "vectors.f32"
    VECTORS.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=VECTORS.shape)
    for kind in ("flat", "hnsw"):
        index = build_vector_index(vector_spec(kind, "cosine", DIM, {}, ROWS), mapped)
        ids, _ = index.search(QUERIES, K)
        np.testing.assert_array_equal(ids, built(kind, "cosine").search(QUERIES, K)[0])
    np.testing.assert_array_equal(np.asarray(mapped), VECTORS)  # the cosine normalisation worked on a copy


@pytest.mark.parametrize("kind", ("flat", "hnsw"))
def test_empty_index(kind):
    index = build_vector_index(vector_spec(kind, "l2", DIM, {}, 0), np.zeros((0, DIM), np.float32))
    ids, scores = index.search(QUERIES[:2], 3)
    assert np.all(ids == -1) and np.all(scores == np.inf)
    again = VectorIndex.from_bytes(index.spec, index.to_bytes(), 0, "empty")
    assert again.ntotal == 0


def test_fewer_rows_than_k():
    index = build_vector_index(vector_spec("hnsw", "dot", DIM, {}, 5), VECTORS[:5])
    ids, scores = index.search(QUERIES[:2], 8)
    assert sorted(ids[0, :5]) == [0, 1, 2, 3, 4]
    assert np.all(ids[:, 5:] == -1) and np.all(scores[:, 5:] == -np.inf)


# ------------------------------------------------------------------------------------------ filtered search


@pytest.mark.parametrize("kind", VECTOR_KINDS)
@pytest.mark.parametrize("fraction", (0.9, 0.3, 0.01))
def test_allowed_mask(kind, fraction):
    metric = "cosine"
    allowed = np.random.default_rng(2).random(ROWS) < fraction
    assert allowed.sum() >= K
    ids, scores = built(kind, metric).search(QUERIES, K, allowed=allowed)
    assert np.all(ids >= 0), "k allowed rows exist, so k results must come back"
    assert allowed[ids].all()
    assert len(set(ids[0])) == K
    truth = exact_top(metric, allowed)
    if kind == "flat":
        np.testing.assert_array_equal(ids, truth)
    else:
        assert recall(ids, truth) >= 0.9


@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_allowed_few_rows_and_none(kind):
    index = built(kind, "l2")
    allowed = np.zeros(ROWS, dtype=bool)
    allowed[[3, 1000, 4999]] = True
    ids, scores = index.search(QUERIES[:4], K, allowed=allowed)
    assert np.all(np.sort(ids[:, :3], axis=1) == [3, 1000, 4999])
    assert np.all(ids[:, 3:] == -1) and np.all(scores[:, 3:] == np.inf)
    ids, _ = index.search(QUERIES[:4], K, allowed=np.zeros(ROWS, dtype=bool))
    assert np.all(ids == -1)


def test_allowed_must_be_a_bool_mask_of_ntotal():
    index = built("flat", "l2")
    with pytest.raises(IndexDefinitionError, match="bool mask"):
        index.search(QUERIES, K, allowed=np.ones(ROWS - 1, dtype=bool))
    with pytest.raises(IndexDefinitionError, match="bool mask"):
        index.search(QUERIES, K, allowed=np.ones(ROWS, dtype=np.uint8))


def test_search_params_change_the_search():
    hnsw = built("hnsw", "l2")
    low, _ = hnsw.search(QUERIES, K, params={"ef_search": 10, "refine": 4})
    high, _ = hnsw.search(QUERIES, K, params={"ef_search": 400})
    truth = exact_top("l2")
    assert recall(high, truth) >= recall(low, truth)
    ivf = built("ivf_sq", "l2")
    one, _ = ivf.search(QUERIES, K, params={"nprobe": 1})
    every, _ = ivf.search(QUERIES, K, params={"nprobe": 10_000})  # capped at nlist: a full scan
    assert recall(every, truth) > recall(one, truth)
    assert recall(every, truth) >= 0.97


# -------------------------------------------------------------------------------------------- byte form


@pytest.mark.parametrize("kind", VECTOR_KINDS)
@pytest.mark.parametrize("metric", ("cosine", "dot"))
def test_round_trip(kind, metric):
    index = built(kind, metric)
    data = index.to_bytes()
    assert data.dtype == np.uint8 and data.ndim == 1
    assert 0.5 * len(data) <= index.nbytes <= 1.5 * len(data)
    read_only = np.frombuffer(data.tobytes(), dtype=np.uint8)
    again = VectorIndex.from_bytes(index.spec, read_only, ROWS, "round trip")
    allowed = np.random.default_rng(3).random(ROWS) < 0.2
    for mask in (None, allowed):
        ids, scores = index.search(QUERIES, K, allowed=mask)
        ids2, scores2 = again.search(QUERIES, K, allowed=mask)
        np.testing.assert_array_equal(ids, ids2)
        np.testing.assert_array_equal(scores, scores2)


@pytest.mark.parametrize("kind", VECTOR_KINDS)
def test_truncated_or_random_bytes(kind):
    index = built(kind, "l2")
    data = index.to_bytes()
    for cut in (0, 3, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(DataCorruptionError, match="idx.bin"):
            VectorIndex.from_bytes(index.spec, data[:cut], ROWS, "idx.bin")
    noise = np.random.default_rng(4).integers(0, 256, len(data), dtype=np.uint8)
    with pytest.raises(DataCorruptionError, match="idx.bin"):
        VectorIndex.from_bytes(index.spec, noise, ROWS, "idx.bin")
    with pytest.raises(DataCorruptionError, match="unexpected bytes"):
        VectorIndex.from_bytes(index.spec, np.concatenate([data, data[:5]]), ROWS, "idx.bin")


def test_bytes_of_another_kind_metric_dim_or_size():
    flat, hnsw = built("flat", "l2"), built("hnsw", "l2")
    cases = [
        (hnsw.spec, flat.to_bytes(), ROWS),
        (flat.spec, hnsw.to_bytes(), ROWS),
        (built("ivf_sq", "l2").spec, built("ivf_pq", "l2").to_bytes(), ROWS),
        (built("flat", "dot").spec, flat.to_bytes(), ROWS),  # metric
        (vector_spec("flat", "l2", DIM // 2, {}, ROWS), flat.to_bytes(), ROWS),  # dim
        (flat.spec, flat.to_bytes(), ROWS + 1),  # ntotal
        (hnsw.spec, hnsw.to_bytes(), ROWS - 1),
        (vector_spec("ivf_sq", "l2", DIM, {"nlist": 64}, ROWS), built("ivf_sq", "l2").to_bytes(), ROWS),
        (vector_spec("ivf_sq", "l2", DIM, {"qtype": "SQ4"}, ROWS), built("ivf_sq", "l2").to_bytes(), ROWS),
        (vector_spec("ivf_pq", "l2", DIM, {"m": 16}, ROWS), built("ivf_pq", "l2").to_bytes(), ROWS),
    ]
    for spec, data, rows in cases:
        with pytest.raises(DataCorruptionError, match="forged"):
            VectorIndex.from_bytes(spec, data, rows, "forged")


def hnsw_arrays(data: np.ndarray) -> dict[str, np.ndarray]:
    index = faiss.deserialize_index(data)  # kept alive while its hnsw member is read
    hnsw = index.hnsw
    return {name: faiss.vector_to_array(getattr(hnsw, name))
            for name in ("neighbors", "levels", "offsets", "cum_nneighbor_per_level")}


@pytest.mark.parametrize("bad_id", (ROWS, ROWS + 1000, -2))
def test_forged_hnsw_neighbor_id(bad_id):
    index = built("hnsw", "l2")
    data = index.to_bytes()
    neighbors = hnsw_arrays(data)["neighbors"]
    forged = neighbors.copy()
    forged[len(forged) // 3] = bad_id
    bad = patched(data, neighbors.tobytes(), forged.tobytes())
    with pytest.raises(DataCorruptionError, match="neighbor ids"):
        VectorIndex.from_bytes(index.spec, bad, ROWS, "graph")


def test_forged_hnsw_upper_level_link_to_a_lower_node():
    index = built("hnsw", "l2")
    data = index.to_bytes()
    a = hnsw_arrays(data)
    levels, offsets, cum, neighbors = a["levels"], a["offsets"], a["cum_nneighbor_per_level"], a["neighbors"]
    upper = int(np.flatnonzero(levels >= 2)[0])
    ground = int(np.flatnonzero(levels == 1)[0])
    forged = neighbors.copy()
    forged[int(offsets[upper]) + int(cum[1])] = ground  # a level-1 link to a node that only lives on level 0
    bad = patched(data, neighbors.tobytes(), forged.tobytes())
    with pytest.raises(DataCorruptionError, match="does not reach"):
        VectorIndex.from_bytes(index.spec, bad, ROWS, "graph")


def test_forged_hnsw_structure():
    index = built("hnsw", "l2")
    data = index.to_bytes()
    a = hnsw_arrays(data)
    levels, offsets = a["levels"], a["offsets"]
    cases = {}
    wrong_levels = levels.copy()
    wrong_levels[10] += 1
    cases["levels"] = (levels.tobytes(), wrong_levels.tobytes())
    wrong_offsets = offsets.copy()
    wrong_offsets[100] += 1
    cases["offsets"] = (offsets.tobytes(), wrong_offsets.tobytes())
    # a size field that would make faiss allocate ~4 TiB before reading
    cases["size"] = (struct.pack("<Q", ROWS) + levels.tobytes(), struct.pack("<Q", 1 << 39) + levels.tobytes())
    loaded = faiss.deserialize_index(data)
    hnsw = loaded.hnsw
    tail = struct.pack("<iiii", hnsw.entry_point, hnsw.max_level, hnsw.efConstruction, hnsw.efSearch)
    cases["entry_point"] = (tail, struct.pack("<iiii", ROWS + 5, hnsw.max_level, hnsw.efConstruction, 64))
    cases["max_level"] = (tail, struct.pack("<iiii", hnsw.entry_point, hnsw.max_level + 1, hnsw.efConstruction,
                                             hnsw.efSearch))
    for old, new in cases.values():
        with pytest.raises(DataCorruptionError, match="graph"):
            VectorIndex.from_bytes(index.spec, patched(data, old, new), ROWS, "graph")


@pytest.mark.parametrize("kind", ("ivf_pq", "ivf_sq"))
@pytest.mark.parametrize("forge", ("out_of_range", "negative", "duplicate"))
def test_forged_ivf_list_ids(kind, forge):
    index = built(kind, "l2")
    raw = faiss.deserialize_index(index.to_bytes())
    lists = faiss.extract_index_ivf(raw).invlists
    first = next(i for i in range(lists.nlist) if lists.list_size(i) >= 2)
    ids = faiss.rev_swig_ptr(lists.get_ids(first), lists.list_size(first))
    ids[0] = {"out_of_range": ROWS + 7, "negative": -1, "duplicate": ids[1]}[forge]
    with pytest.raises(DataCorruptionError, match="lists"):
        VectorIndex.from_bytes(index.spec, faiss.serialize_index(raw), ROWS, "lists")


@pytest.mark.parametrize("kind", ("ivf_pq", "ivf_sq"))
def test_forged_ivf_list_size(kind):
    index = built(kind, "l2")
    data = index.to_bytes()
    loaded = faiss.deserialize_index(data)
    raw = faiss.extract_index_ivf(loaded)
    sizes = np.array([raw.invlists.list_size(i) for i in range(raw.nlist)], dtype="<u8")
    for first in (sizes[0] + 1, 1 << 39):
        forged = sizes.copy()
        forged[0] = first
        with pytest.raises(DataCorruptionError, match="sizes"):
            VectorIndex.from_bytes(index.spec, patched(data, sizes.tobytes(), forged.tobytes()), ROWS, "sizes")


def test_forged_pq_shape():
    """faiss divides by the stored PQ M: a forged 0 would kill the process."""
    index = built("ivf_pq", "l2")
    data = index.to_bytes()
    p = index.spec.params
    old = struct.pack("<QQQ", DIM, p["m"], p["nbits"])
    for new in (struct.pack("<QQQ", DIM, 0, p["nbits"]), struct.pack("<QQQ", DIM, p["m"], 40)):
        with pytest.raises(DataCorruptionError, match="pq"):
            VectorIndex.from_bytes(index.spec, patched(data, old, new), ROWS, "pq")


SMALL_ROWS = 64
SMALL_SPECS = {
    "flat": vector_spec("flat", "cosine", 8, {}, SMALL_ROWS),
    "hnsw": vector_spec("hnsw", "l2", 8, {"M": 4, "ef_construction": 16}, SMALL_ROWS),
    "ivf_pq": vector_spec("ivf_pq", "dot", 8, {"nlist": 2, "m": 2, "nbits": 4}, SMALL_ROWS),
    "ivf_sq": vector_spec("ivf_sq", "cosine", 8, {"nlist": 2, "qtype": "SQ4"}, SMALL_ROWS),
}
_SMALL_BYTES: dict[str, np.ndarray] = {}


def small_bytes(kind: str) -> np.ndarray:
    if kind not in _SMALL_BYTES:
        vectors = clustered(SMALL_ROWS, 8, seed=5)
        _SMALL_BYTES[kind] = build_vector_index(SMALL_SPECS[kind], vectors).to_bytes()
    return _SMALL_BYTES[kind]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(VECTOR_KINDS), data=st.data())
def test_damaged_bytes_fail_typed_or_load_sound(kind, data):
    """Flipped or cut bytes give DataCorruptionError or an index that searches without crashing."""
    original = small_bytes(kind)
    raw = bytearray(original.tobytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="cut")]
    else:
        # half the flips land in the first 256 bytes, where the headers and size fields are
        where = st.one_of(st.integers(0, len(raw) - 1), st.integers(0, min(255, len(raw) - 1)))
        for at, value in data.draw(st.lists(st.tuples(where, st.integers(0, 255)), min_size=1, max_size=4)):
            raw[at] = value
    try:
        index = VectorIndex.from_bytes(SMALL_SPECS[kind], np.frombuffer(bytes(raw), np.uint8), SMALL_ROWS, "x")
    except DataCorruptionError as e:
        assert "x" in str(e)
        return
    ids, scores = index.search(clustered(4, 8, seed=6), 5, allowed=np.arange(SMALL_ROWS) % 3 > 0)
    assert ids.shape == (4, 5) and np.all((ids >= -1) & (ids < SMALL_ROWS))


# ------------------------------------------------------------------------------------------- typed errors


def test_spec_defaults():
    assert vector_spec("hnsw", "cosine", 384, {}, 1000).params == {"M": 32, "ef_construction": 200, "ef_search": 64}
    big = vector_spec("ivf_pq", "l2", 384, {}, 1_000_000).params
    assert big == {"nlist": 4000, "m": 96, "nbits": 8, "nprobe": 63}
    assert vector_spec("ivf_sq", "dot", 30, {}, 1000).params == {"nlist": 25, "qtype": "SQ8", "nprobe": 8}
    assert vector_spec("ivf_sq", "dot", 30, {}, 0).params["nlist"] == 1
    assert vector_spec("ivf_pq", "dot", 30, {}, 1000).params["m"] == 6  # largest divisor of 30 <= 7.5
    assert vector_spec("flat", "dot", 3, {}, 10).params == {}
    for kind in VECTOR_KINDS:
        json.dumps(vector_spec(kind, "l2", 64, {}, 50_000).params)


def test_unknown_kind_and_metric():
    with pytest.raises(IndexDefinitionError, match="unknown vector index kind 'ivf'.*flat, hnsw"):
        vector_spec("ivf", "l2", 8, {}, 10)
    with pytest.raises(IndexDefinitionError, match="unknown metric 'ip'.*cosine, l2, dot"):
        vector_spec("flat", "ip", 8, {}, 10)
    with pytest.raises(IndexDefinitionError, match="unknown vector index kind"):
        search_param_names("bm25")


@pytest.mark.parametrize("kind, params, message", [
    ("hnsw", {"nlist": 4}, "unknown hnsw index parameter.*'nlist'.*accepted: M, ef_construction, ef_search"),
    ("flat", {"M": 4}, "unknown flat index parameter.*accepted: none"),
    ("ivf_sq", {"m": 4}, "unknown ivf_sq.*accepted: nlist, qtype, nprobe"),
    ("hnsw", {"M": "32"}, "'M': expected a positive int"),
    ("hnsw", {"M": 1}, "'M': expected an int >= 2"),
    ("hnsw", {"ef_search": True}, "'ef_search': expected a positive int"),
    ("hnsw", {"ef_construction": 2.0}, "'ef_construction': expected a positive int"),
    ("ivf_pq", {"nlist": 0}, "'nlist': expected a positive int"),
    ("ivf_pq", {"m": 5}, "'m': must divide dim 32"),
    ("ivf_pq", {"nbits": 17}, "'nbits': expected a positive int <= 16"),
    ("ivf_sq", {"qtype": "SQ3"}, "'qtype': expected one of SQ8, SQ4, SQfp16, got 'SQ3'"),
    ("ivf_sq", {"nprobe": -3}, "'nprobe': expected a positive int"),
])
def test_bad_build_params(kind, params, message):
    with pytest.raises(IndexDefinitionError, match=message):
        vector_spec(kind, "l2", DIM, params, ROWS)


def test_bad_dim_rows_and_too_few_rows_to_train():
    with pytest.raises(IndexDefinitionError, match="dim"):
        vector_spec("flat", "l2", 0, {}, 10)
    with pytest.raises(IndexDefinitionError, match="rows"):
        vector_spec("flat", "l2", 8, {}, -1)
    spec = vector_spec("ivf_sq", "l2", DIM, {"nlist": 100}, 50)
    with pytest.raises(IndexDefinitionError, match="at least 100 rows"):
        build_vector_index(spec, VECTORS[:50])
    with pytest.raises(IndexDefinitionError, match=r"shape \(n, 32\)"):
        build_vector_index(vector_spec("flat", "l2", DIM, {}, 5), VECTORS[:5, :8])


def test_search_param_names_and_checks():
    assert search_param_names("flat") == {"refine"}
    assert search_param_names("hnsw") == {"ef_search", "refine"}
    assert search_param_names("ivf_pq") == search_param_names("ivf_sq") == {"nprobe", "refine"}
    assert set().union(*(search_param_names(k) for k in VECTOR_KINDS)) == ALL_SEARCH_PARAMS
    given_params = {"ef_search": 80, "refine": np.int64(2)}
    checked = check_search_params("hnsw", given_params)
    assert checked == {"ef_search": 80, "refine": 2} and checked is not given_params
    with pytest.raises(IndexDefinitionError, match="'nprobe' does not apply to a hnsw index: it takes ef_search, re"):
        check_search_params("hnsw", {"nprobe": 4})
    with pytest.raises(IndexDefinitionError, match="'ef_search' does not apply to a flat index: it takes refine"):
        check_search_params("flat", {"ef_search": 4})
    with pytest.raises(IndexDefinitionError, match="'nprobe': expected a positive int.*got 0"):
        check_search_params("ivf_pq", {"nprobe": 0})
    with pytest.raises(IndexDefinitionError, match="'refine': expected a positive int.*got '2'"):
        check_search_params("ivf_sq", {"refine": "2"})
    index = built("hnsw", "l2")
    with pytest.raises(IndexDefinitionError, match="does not apply"):
        index.search(QUERIES, K, params={"nprobe": 3})
    with pytest.raises(IndexDefinitionError, match="k must be a positive int"):
        index.search(QUERIES, 0)
    with pytest.raises(IndexDefinitionError, match="queries"):
        index.search(QUERIES[:, :4], K)


@pytest.mark.parametrize("value", ("abc", "0", "-2", "1.5"))
def test_invalid_thread_count(monkeypatch, value):
    monkeypatch.setenv("TENSORDB_NUM_THREADS", value)
    with pytest.raises(IndexDefinitionError, match=f"TENSORDB_NUM_THREADS: expected a positive int, got '{value}'"):
        num_threads()
    with pytest.raises(IndexDefinitionError, match="TENSORDB_NUM_THREADS"):
        build_vector_index(vector_spec("flat", "l2", DIM, {}, 5), VECTORS[:5])
    monkeypatch.setenv("TENSORDB_NUM_THREADS", "1")
    index = build_vector_index(vector_spec("flat", "l2", DIM, {}, 5), VECTORS[:5])
    monkeypatch.setenv("TENSORDB_NUM_THREADS", value)
    with pytest.raises(IndexDefinitionError, match="TENSORDB_NUM_THREADS"):
        index.search(QUERIES, K)


def test_thread_count_applies_and_is_restored(monkeypatch):
    calls = []
    real = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: (calls.append(n), real(n)))
    before = faiss.omp_get_max_threads()
    monkeypatch.delenv("TENSORDB_NUM_THREADS")
    assert num_threads() is None
    built("flat", "l2").search(QUERIES, K)
    assert calls == []  # unset: faiss keeps its own default
    monkeypatch.setenv("TENSORDB_NUM_THREADS", " 3 ")
    assert num_threads() == 3
    built("flat", "l2").search(QUERIES, K)
    build_vector_index(vector_spec("flat", "l2", DIM, {}, 5), VECTORS[:5])
    assert calls == [3, before, 3, before]
    assert faiss.omp_get_max_threads() == before
