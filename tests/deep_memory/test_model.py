import json

import numpy as np

from tensordb.deep_memory.model import DeepMemoryModel


def _random_model(rng, dim=16, n_mem=5):
    a = np.eye(dim, dtype=np.float32) + 0.3 * rng.standard_normal((dim, dim)).astype(np.float32)
    mem = 0.2 * rng.standard_normal((n_mem, dim)).astype(np.float32)
    return DeepMemoryModel(a, [f"d{i}" for i in range(0, 2 * n_mem, 2)], mem, {"note": "x"})


def test_identity_leaves_rankings_unchanged():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((300, 24)).astype(np.float32) * rng.uniform(0.5, 2, (300, 1))
    queries = rng.standard_normal((20, 24)).astype(np.float32)
    ids = [f"d{i}" for i in range(300)]
    model = DeepMemoryModel.identity(24)
    assert model.is_identity
    ranked = model.search(queries, docs, ids, k=50)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        docs / np.linalg.norm(docs, axis=1, keepdims=True)
    ).T
    expected = [[ids[j] for j in np.argsort(-row, kind="stable")[:50]] for row in cos]
    assert ranked == expected


def _brute_force_scores(model, q, docs, ids):
    """The model's score definition, written out in float64 one pair at a time."""
    ref = np.zeros((len(q), len(docs)))
    for i in range(len(q)):
        qq = (q[i] / np.linalg.norm(q[i])).astype(np.float64) @ model.query_matrix.astype(np.float64)
        for j in range(len(docs)):
            norm = np.linalg.norm(docs[j])
            ref[i, j] = qq @ docs[j] / norm if norm else 0.0
            if ids[j] in model.memory_ids:
                ref[i, j] += qq @ model.memory_vectors[model.memory_ids.index(ids[j])]
    return ref


def test_score_block_matches_brute_force():
    rng = np.random.default_rng(1)
    model = _random_model(rng)
    docs = rng.standard_normal((40, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(40)]
    q = rng.standard_normal((3, 16)).astype(np.float32)
    qp = model.transform_queries(q)
    assert qp.dtype == np.float32 and qp.shape == (3, 16)
    mem = model.memory_index(ids)
    assert mem.tolist()[:4] == [0, -1, 1, -1] and (mem[10:] == -1).all()
    got = model.score_block(qp, docs, np.linalg.norm(docs, axis=1), mem)
    np.testing.assert_allclose(got, _brute_force_scores(model, q, docs, ids), rtol=1e-4, atol=1e-5)
    # Single query form and default norms give the same scores.
    np.testing.assert_allclose(model.score_block(qp[1], docs, None, mem), got[1], rtol=1e-5, atol=1e-6)
    # Without a memory index no correction is applied.
    plain = model.score_block(qp, docs, np.linalg.norm(docs, axis=1), None)
    assert not np.allclose(plain, got)


def test_inference_ranks_as_training_scores():
    """Training scores with q' scaled to unit length; inference must rank alike."""
    rng = np.random.default_rng(5)
    model = _random_model(rng)
    docs = rng.standard_normal((60, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(60)]
    q = rng.standard_normal((5, 16)).astype(np.float32)
    qp = model.transform_queries(q)
    trained = model.score_block(qp / np.linalg.norm(qp, axis=1, keepdims=True), docs, None, model.memory_index(ids))
    got = model.score_block(qp, docs, None, model.memory_index(ids))
    np.testing.assert_allclose(got / np.linalg.norm(qp, axis=1, keepdims=True), trained, rtol=1e-5, atol=1e-6)
    assert [list(np.argsort(-r)) for r in got] == [list(np.argsort(-r)) for r in trained]


def test_folded_block_scores_like_the_model():
    rng = np.random.default_rng(6)
    model = _random_model(rng)
    docs = rng.standard_normal((40, 16)).astype(np.float32) * rng.uniform(0.5, 3, (40, 1)).astype(np.float32)
    docs[2] = 0.0  # a zero row that carries memory keeps its memory score
    ids = [f"d{i}" for i in range(40)]
    q = rng.standard_normal((3, 16)).astype(np.float32)
    index = model.memory_index(ids)
    rows = np.flatnonzero(index >= 0)
    norms = np.linalg.norm(docs, axis=1)
    before = docs.copy()
    folded = model.fold_block(docs, (rows, index[rows]), norms)
    got = model.score_block(model.unit_queries(q), folded, norms)
    np.testing.assert_allclose(got, _brute_force_scores(model, q, docs, ids), rtol=1e-4, atol=1e-5)
    assert np.array_equal(docs, before)  # the stored block is never modified
    # Unit-norm rows fold without norms and score without division.
    unit = docs[3:] / np.linalg.norm(docs[3:], axis=1, keepdims=True)
    index = model.memory_index(ids[3:])
    rows = np.flatnonzero(index >= 0)
    folded = model.fold_block(unit, (rows, index[rows]), unit_rows=True)
    np.testing.assert_allclose(model.score_block(model.unit_queries(q), folded, unit_rows=True),
                               _brute_force_scores(model, q, unit, ids[3:]), rtol=1e-4, atol=1e-5)


def test_state_round_trip_is_exact_and_json_safe():
    rng = np.random.default_rng(2)
    model = _random_model(rng)
    arrays, params = model.to_state()
    assert params["format_version"] == 1
    params2 = json.loads(json.dumps(params))
    arrays2 = {k: np.array(v) for k, v in arrays.items()}
    back = DeepMemoryModel.from_state(arrays2, params2)
    docs = rng.standard_normal((30, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(30)]
    q = rng.standard_normal((4, 16)).astype(np.float32)
    s1 = model.score_block(model.transform_queries(q), docs, None, model.memory_index(ids))
    s2 = back.score_block(back.transform_queries(q), docs, None, back.memory_index(ids))
    assert np.array_equal(s1, s2)
    assert back.memory_ids == model.memory_ids and back.metadata == {"note": "x"}


def test_from_state_rejects_unknown_version():
    arrays, params = DeepMemoryModel.identity(4).to_state()
    params["format_version"] = 999
    try:
        DeepMemoryModel.from_state(arrays, params)
    except ValueError as e:
        assert "format_version" in str(e)
    else:
        raise AssertionError("expected ValueError")
