"""Datasets on S3 (moto on loopback): credentials, typed errors naming the path, time travel and copies."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

import tensordb
from tensordb.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    DatasetNotFoundError,
    ForeignFilesError,
    TensorDBError,
)
from tensordb.format import manifest as mf
from tensordb.storage import open_store


def _small(ds: tensordb.Dataset, rows: int = 20) -> None:
    ds.create_tensor("embedding", htype="embedding")
    ds.create_tensor("text", htype="text")
    ds.extend({"embedding": np.arange(rows * 4, dtype=np.float32).reshape(rows, 4),
               "text": [f"row {i}" for i in range(rows)]})


def _without_env(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")


def test_creds_argument_works_without_environment_and_is_never_stored_or_shown(s3_server, s3_url, monkeypatch):
    _without_env(monkeypatch)
    secret = s3_server.creds["aws_secret_access_key"]
    ds = tensordb.empty(s3_url, creds=s3_server.creds)
    _small(ds)
    commit = ds.commit("first")
    again = tensordb.load(s3_url, read_only=True, creds=s3_server.creds)
    assert again.text[3].numpy() == "row 3"
    assert secret not in repr(ds) and secret not in repr(again) and secret not in repr(ds._store)
    store = open_store(s3_url, s3_server.creds)
    for key in store.list():  # every object of the dataset: the secret is in none of them
        assert secret.encode() not in store.get(key), key
    with pytest.raises(TensorDBError) as caught:
        tensordb.load(s3_url + "-absent", creds=s3_server.creds)
    assert secret not in str(caught.value)
    assert tensordb.load(f"{s3_url}@{commit}", creds=s3_server.creds).commit_id == commit


def test_environment_credentials_are_used_when_creds_is_omitted(s3_url):
    ds = tensordb.empty(s3_url)
    _small(ds)
    assert len(tensordb.load(s3_url, read_only=True)) == 20


def test_missing_bucket_names_the_path_for_create_and_load(s3_server, s3_url):
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/docs"
    with pytest.raises(BucketNotFoundError, match="no-such-bucket"):
        tensordb.empty(missing)
    with pytest.raises(BucketNotFoundError, match="no-such-bucket"):
        tensordb.load(missing)


def test_unknown_keys_are_denied_with_a_typed_error(s3_server, s3_url):
    ds = tensordb.empty(s3_url)
    _small(ds)
    with s3_server.auth_enforced(), pytest.raises(AccessDeniedError, match=s3_url.split("/")[-1]):
        tensordb.load(s3_url, read_only=True)


def test_a_prefix_holding_other_objects_is_refused_and_left_untouched(s3_url):
    store = open_store(s3_url)
    store.put("report.csv", b"a,b\n1,2\n")
    before = {key: store.get(key) for key in store.list()}
    with pytest.raises(ForeignFilesError, match="report.csv"):
        tensordb.empty(s3_url)
    with pytest.raises(DatasetNotFoundError, match=s3_url):
        tensordb.load(s3_url)
    assert {key: store.get(key) for key in store.list()} == before


def test_deepcopy_to_s3_and_back_keeps_history(s3_url, tmp_path):
    local = tensordb.empty(str(tmp_path / "src"))
    _small(local)
    first = local.commit("first")
    local.extend({"embedding": np.ones((2, 4), np.float32), "text": ["x", "y"]})
    local.commit("second")
    remote = tensordb.deepcopy(str(tmp_path / "src"), s3_url, progress=False)
    assert remote.log(show=False) == local.log(show=False)
    back = tensordb.deepcopy(s3_url, str(tmp_path / "back"), progress=False)
    assert len(back) == 22
    old = tensordb.load(f"{tmp_path / 'back'}@{first}")
    assert len(old) == 20 and old.text[19].numpy() == "row 19"
    assert tensordb.verify(s3_url).ok


def test_first_query_costs_a_constant_plus_one_request_per_chunk(s3_url, tmp_path, monkeypatch):
    ds = tensordb.empty(s3_url)
    ds.create_tensor("embedding", htype="embedding", max_chunk_size=64 << 10)
    ds.create_tensor("text", htype="text")
    rows = 4000
    ds.extend({"embedding": np.random.default_rng(0).random((rows, 32), dtype=np.float32),
               "text": [f"row {i}" for i in range(rows)]})
    chunks = len(ds._state.tensors["embedding"].chunk_keys) + len(ds._state.tensors["text"].chunk_keys)
    monkeypatch.setenv("TENSORDB_CACHE_DIR", str(tmp_path / "cold-cache"))  # cold: nothing cached
    store = open_store(s3_url, immutable_prefixes=mf.IMMUTABLE_PREFIXES)
    cold = tensordb.load(store, read_only=True)
    opened = store.requests.total
    query = "select * order by cosine_similarity(embedding, array[" + ",".join(["0.5"] * 32) + "]) desc limit 10"
    assert len(cold.query(query)) == 10
    assert opened <= 4
    assert store.requests.total - opened <= chunks  # one whole-object read per chunk, none of them twice
    before = store.requests.total
    cold.query(query)
    assert store.requests.total == before  # warm: every chunk is cached


def test_a_swap_whose_answer_was_lost_is_not_applied_twice_after_others_wrote_on_top(s3_url):
    """A's swap of refs lands but its answer is lost; B appends on top before A retries.

    A's retry then meets B's refs (412), so the store cannot tell that A's write landed. A finds its
    snapshot among the branch's recent ones and stops; before, it rebased and appended its rows twice.
    """
    ds = tensordb.empty(s3_url)
    ds.create_tensor("text", htype="text")
    ds.extend({"text": ["base"]})
    a = tensordb.load(s3_url)
    b = tensordb.load(s3_url)
    lost = []

    def lose_the_answer(kind, key, send):
        result = send()
        if key == mf.REFS_KEY and kind == "put" and not lost:
            lost.append(key)
            b.extend({"text": ["from b"]})  # lands on top of A's write
            raise ConnectionError("connection reset after the request was applied")
        return result

    a._store.intercept = lose_the_answer
    a.extend({"text": ["from a"]})
    a._store.intercept = None
    assert lost
    rows = tensordb.load(s3_url, read_only=True).text.numpy().tolist()
    assert sorted(rows) == ["base", "from a", "from b"]
    assert len(a) == 3  # A follows the head, which holds both writes


def test_a_write_that_landed_with_every_answer_lost_is_done_not_an_error(s3_url):
    """Each try of the swap of refs is applied but its answer lost, until the store gives up with a
    NetworkError. Readers see the write, and on S3 what readers see is durable: before, the call raised,
    and a caller retrying on the error wrote the rows twice."""
    ds = tensordb.empty(s3_url)
    ds.create_tensor("text", htype="text")
    ds.extend({"text": ["base"]})

    tries = []

    def apply_then_lose_the_answer(kind, key, send):
        if key != mf.REFS_KEY or kind != "put":
            return send()
        tries.append(key)
        if len(tries) == 1:
            send()  # applied; then the connection drops, and so does every retry
        raise ConnectionError("connection reset")

    ds._store.intercept = apply_then_lose_the_answer
    ds._store.backoff = 0.001
    ds.extend({"text": ["once"]})  # no error: the write is in the store
    ds._store.intercept = None
    assert len(tries) == ds._store.attempts  # the store gave up (NetworkError); the dataset saw it landed
    assert tensordb.load(s3_url, read_only=True).text.numpy().tolist() == ["base", "once"]
    assert ds.text.numpy().tolist() == ["base", "once"]
