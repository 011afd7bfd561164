"""S3Store against a real S3 server on loopback (moto): conditional writes, the request seam, errors, the cache."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest

from tensordb.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    DataCorruptionError,
    KeyNotFoundError,
    MissingExtraError,
    NetworkError,
    PreconditionFailedError,
    StorageError,
)
from tensordb.storage import open_store
from tensordb.storage.object_location import parse_s3_url, resolve_location
from tensordb.storage.object_store import WRITE_THROUGH_BYTES, S3Store

IMMUTABLE = ("chunks/", "states/")
SECRET = "very-secret-key-4f1d"
KEY_ID = "key-id-9c2e"


@pytest.fixture
def s3(s3_url):
    return S3Store(s3_url, immutable_prefixes=IMMUTABLE, attempts=4, backoff=0.01)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Faults:
    """An ``intercept``: fails the next ``n`` requests of ``kind``, before sending (``lost=False``) or after
    the server applied them (``lost=True``: the answer is lost, the outcome ambiguous)."""

    def __init__(self, kind: str, n: int, lost: bool = False, error: Exception | None = None):
        self.kind, self.left, self.lost = kind, n, lost
        self.error = error or ConnectionError("injected: connection reset")

    def __call__(self, kind, key, send):
        if kind != self.kind or self.left <= 0:
            return send()
        self.left -= 1
        if self.lost:
            send()
        raise self.error


# -- round trips --------------------------------------------------------------------------------------


def test_round_trips_and_versions(s3):
    s3.put("chunks/a", [b"head", memoryview(b"-body-"), b"tail"])
    assert s3.get("chunks/a") == b"head-body-tail"
    assert bytes(s3.map("chunks/a")) == b"head-body-tail"
    s3.publish("refs", b"one")
    data, version = s3.get_versioned("refs")
    assert data == b"one" and version.strip('"')
    s3.publish("refs", b"two")
    assert s3.get_versioned("refs")[1] != version
    assert s3.size("chunks/a") == 14
    assert s3.modified_time("refs") > time.time() - 3600
    assert s3.modified_time("missing") == 0.0
    with pytest.raises(DataCorruptionError, match="at most 2 bytes"):
        s3.get("refs", max_bytes=2)


def test_put_refuses_to_overwrite(s3):
    s3.put("chunks/a", b"first")
    with pytest.raises(PreconditionFailedError, match="already exists") as info:
        s3.put("chunks/a", b"second")
    assert s3.url in str(info.value) and "chunks/a" in str(info.value)
    assert s3.get("chunks/a") == b"first"


def test_range_reads_of_uncached_keys_are_one_request_and_do_not_fill_the_cache(s3):
    data = bytes(range(256)) * 40
    s3.put("chunks/c", data)
    s3.cache.clear()  # as if another process wrote it: this machine has nothing cached
    s3.requests.reset()
    assert s3.get_range("chunks/c", 100, 50) == data[100:150]
    assert s3.get_range("chunks/c", len(data) - 3, 10) == data[-3:]
    assert s3.get_range("chunks/c", len(data), 10) == b""
    assert s3.requests.counts() == {"get_range": 3}
    assert s3.cache.get(f"{s3.url}/chunks/c") is None
    s3.map("chunks/c")  # whole object into the cache: 1 GET
    s3.requests.reset()
    out = bytearray(64)
    s3.read_into("chunks/c", 10, memoryview(out))
    assert bytes(out) == data[10:74] and s3.get_range("chunks/c", 5, 5) == data[5:10]
    assert s3.requests.total == 0  # served by the cache


def test_immutable_keys_are_fetched_once_mutable_keys_every_time(s3):
    s3.put("chunks/a", b"x" * 1000)
    s3.publish("refs", b"head")
    s3.cache.clear()  # as if another process wrote it: this machine has nothing cached
    s3.requests.reset()
    for _ in range(2):
        assert bytes(s3.map("chunks/a")) == b"x" * 1000
        assert s3.get("chunks/a") == b"x" * 1000
    assert s3.requests.counts() == {"get": 1}
    s3.requests.reset()
    assert s3.get("refs") == b"head" and bytes(s3.map("refs")) == b"head"
    assert s3.requests.counts() == {"get": 2}


def test_small_immutable_objects_are_cached_as_they_are_written(s3):
    small, large = b"s" * 1000, b"L" * (WRITE_THROUGH_BYTES + 1)
    s3.put("chunks/small", small)
    s3.put("chunks/large", large)
    s3.publish("attachments/record", b"mutable")
    s3.requests.reset()
    assert s3.get("chunks/small") == small and s3.size("chunks/small") == len(small)
    assert s3.requests.total == 0  # read back from the cache: appends merge small chunks soon after
    assert s3.get("chunks/large") == large and s3.get("attachments/record") == b"mutable"
    assert s3.requests.counts() == {"get": 2}  # large and mutable objects are not kept on write


def test_a_second_store_shares_the_cache_by_identity(s3, s3_url):
    s3.put("chunks/a", b"payload")
    s3.map("chunks/a")
    other = S3Store(s3_url, immutable_prefixes=IMMUTABLE)
    assert other.get("chunks/a") == b"payload"
    assert other.requests.total == 0


# -- compare-and-swap ---------------------------------------------------------------------------------


def test_swap_create_then_update(s3):
    s3.swap("refs", b"v1", None)
    with pytest.raises(PreconditionFailedError, match="nothing was written"):
        s3.swap("refs", b"other", None)
    _, v1 = s3.get_versioned("refs")
    s3.swap("refs", b"v2", v1)
    assert s3.get("refs") == b"v2"


def test_swap_on_a_stale_version_writes_nothing(s3):
    s3.publish("refs", b"v1")
    _, stale = s3.get_versioned("refs")
    s3.publish("refs", b"v2")
    with pytest.raises(PreconditionFailedError, match="changed since it was read"):
        s3.swap("refs", b"mine", stale)
    assert s3.get("refs") == b"v2"
    s3.delete("refs")
    with pytest.raises(PreconditionFailedError):
        s3.swap("refs", b"mine", stale)  # deleted meanwhile: also someone else's change
    assert not s3.exists("refs")


def test_racing_swaps_have_exactly_one_winner(s3, s3_url):
    s3.publish("refs", b"base")
    _, base = s3.get_versioned("refs")
    writers = [S3Store(s3_url) for _ in range(8)]
    won, lost = [], []
    barrier = threading.Barrier(len(writers))

    def write(i):
        barrier.wait()
        try:
            writers[i].swap("refs", f"writer {i}".encode(), base)
            won.append(i)
        except PreconditionFailedError:
            lost.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == len(writers) - 1
    assert s3.get("refs") == f"writer {won[0]}".encode()


# -- listing and bookkeeping ----------------------------------------------------------------------------


def test_list_and_entries_exclude_the_lease_objects(s3):
    s3.put("chunks/a", b"1")
    s3.publish("refs", b"2")
    lease = s3.hold_lease("writer")
    try:
        assert s3.lease_held("writer")
        assert s3.list() == ["chunks/a", "refs"]
        assert s3.entries() == ["chunks", "refs"]
        s3.clear()
        assert s3.list() == [] and s3.lease_held("writer")  # clear keeps the store's bookkeeping
    finally:
        lease.release()
    assert not s3.lease_held("writer")


def test_leases_exclude_a_second_holder(s3, s3_url):
    from tensordb.errors import LockedError

    lease = s3.hold_lease("vacuum")
    try:
        with pytest.raises(LockedError):
            S3Store(s3_url).hold_lease("vacuum")
    finally:
        lease.release()
    S3Store(s3_url).hold_lease("vacuum").release()


def test_the_writer_lock_excludes_nobody(s3):
    assert S3Store.concurrent_writers
    first = s3.acquire_writer_lock()
    second = s3.acquire_writer_lock(create=False)
    first.release()
    second.release()


def test_delete_many_is_one_request_and_drops_cached_copies(s3):
    keys = [f"chunks/{i}" for i in range(5)]
    for key in keys:
        s3.put(key, key.encode())
        s3.map(key)
    s3.requests.reset()
    s3.delete_many(keys + ["chunks/never-there"])
    assert s3.requests.counts() == {"delete": 1}
    assert s3.list() == []
    assert s3.cache.get(f"{s3.url}/chunks/0") is None
    with pytest.raises(KeyNotFoundError):
        s3.get("chunks/0")


# -- errors -------------------------------------------------------------------------------------------


def test_a_missing_bucket_is_named(s3_server, s3_url):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/ds"
    store = S3Store(url)
    for call in (lambda: store.get("refs"), lambda: store.put("chunks/a", b"1"), lambda: store.list(),
                 lambda: store.acquire_writer_lock(create=False)):
        with pytest.raises(BucketNotFoundError) as info:
            call()
        assert url in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(BucketNotFoundError, match="'refs'"):
        store.get("refs")


def test_a_missing_key_is_key_not_found(s3):
    with pytest.raises(KeyNotFoundError, match="no object 'nope'"):
        s3.get("nope")
    with pytest.raises(KeyNotFoundError):
        s3.get_range("chunks/nope", 0, 4)
    with pytest.raises(KeyNotFoundError):
        s3.size("nope")
    assert not s3.exists("nope")


def test_bad_credentials_are_access_denied(s3_server, s3_url):
    # moto checks signatures only with authentication enforced; then our test keys are unknown to it: 403
    store = S3Store(s3_url, {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET})
    with s3_server.auth_enforced():
        for call in (lambda: store.get("refs"), lambda: store.put("chunks/a", b"1"), lambda: store.list()):
            with pytest.raises(AccessDeniedError) as info:
                call()
            text = str(info.value)
            assert s3_url in text and "403" in text
            assert SECRET not in text and KEY_ID not in text
    assert isinstance(info.value, PermissionError)
    store.put("chunks/a", b"1")  # authentication off again: accepted


def test_an_unreachable_endpoint_is_a_network_error_soon(s3_url):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    store = S3Store(s3_url, {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET, "endpoint_url": endpoint},
                    attempts=3, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(NetworkError) as info:
        store.get("refs")
    assert time.monotonic() - start < 5
    assert store.requests.counts() == {"get": 3}
    text = str(info.value)
    assert s3_url in text and "'refs'" in text and "after 3 attempts" in text
    assert SECRET not in text and KEY_ID not in text
    assert isinstance(info.value, ConnectionError)


def test_transient_faults_are_retried(s3):
    s3.intercept = Faults("put", 2)
    s3.put("chunks/a", b"data")
    assert s3.requests["put"] == 3
    s3.cache.clear()  # as if another process wrote it: this machine has nothing cached
    s3.intercept = Faults("get", 3, error=obstore_error("Server returned non-2xx status code: 503 Slow Down"))
    assert s3.get("chunks/a") == b"data"
    assert s3.requests["get"] == 4


def test_faults_beyond_the_retry_budget_are_a_network_error_with_nothing_written(s3):
    s3.intercept = Faults("put", 10)
    with pytest.raises(NetworkError, match="writing 'chunks/a' failed after 4 attempts"):
        s3.put("chunks/a", b"data")
    s3.intercept = None
    assert not s3.exists("chunks/a")


def test_client_errors_are_not_retried(s3):
    s3.intercept = Faults("get", 5, error=obstore_error("Server returned non-2xx status code: 400 Bad Request"))
    with pytest.raises(StorageError, match="HTTP 400"):
        s3.get("refs")
    assert s3.requests["get"] == 1


def test_a_put_whose_answer_was_lost_succeeds_on_retry(s3):
    s3.intercept = Faults("put", 1, lost=True)
    s3.put("chunks/a", b"data")  # the retry finds the object present, with our size: ours
    assert s3.requests["put"] == 2 and s3.get("chunks/a") == b"data"


def test_a_swap_whose_answer_was_lost_succeeds_on_retry(s3):
    s3.publish("refs", b"v1")
    _, v1 = s3.get_versioned("refs")
    s3.intercept = Faults("put", 1, lost=True)
    s3.swap("refs", b"v2", v1)  # the retry gets 412, reads the key and finds exactly our bytes
    assert s3.get("refs") == b"v2"
    s3.intercept = Faults("put", 1, lost=True)
    s3.swap("locks/x", b"new", None)  # create, applied, answer lost: the retry finds it present, ours
    assert s3.get("locks/x") == b"new"


def test_a_swap_that_lost_its_answer_and_then_the_race_fails(s3, s3_url):
    s3.publish("refs", b"v1")
    _, v1 = s3.get_versioned("refs")
    rival = S3Store(s3_url)

    def lost_then_overwritten(kind, key, send):
        if kind == "put" and not hasattr(lost_then_overwritten, "done"):
            lost_then_overwritten.done = True
            send()
            _, mine = rival.get_versioned("refs")
            rival.swap("refs", b"rival", mine)  # a rival commits on top before we retry
            raise ConnectionError("injected")
        return send()

    s3.intercept = lost_then_overwritten
    with pytest.raises(PreconditionFailedError):
        s3.swap("refs", b"v2", v1)
    assert s3.get("refs") == b"rival"


def obstore_error(text: str) -> Exception:
    from obstore.exceptions import GenericError

    return GenericError(f"Generic S3 error: Error performing GET http://127.0.0.1/x - {text}")


# -- credentials ---------------------------------------------------------------------------------------


def test_credentials_never_show(s3_server, s3_url):
    creds = {**s3_server.creds, "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET,
             "aws_session_token": "token-77"}
    store = open_store(s3_url, creds=creds)
    for text in (repr(store), str(store), store.url, repr(store.location), str(store.location)):
        assert SECRET not in text and KEY_ID not in text and "token-77" not in text
    assert repr(store) == f"S3Store({s3_url!r})"
    store.put("chunks/a", b"1")  # moto takes any key: the explicit creds were used
    with pytest.raises(TypeError) as info:
        open_store(s3_url, creds={"aws_secret_key": SECRET})
    assert "aws_secret_key" in str(info.value) and "aws_secret_access_key" in str(info.value)
    assert SECRET not in str(info.value)


def test_credentials_resolve_from_creds_then_env_then_profile(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_SESSION_TOKEN": "env-token",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/", "AWS_REGION": "eu-west-1"}
    given = resolve_location("s3://bkt1/p", {"aws_access_key_id": "c-id", "aws_secret_access_key": "c-s"}, env)
    # the key pair and token come as one unit: the env's token never pairs with the given keys
    assert (given.access_key_id, given.secret_access_key, given.session_token) == ("c-id", "c-s", None)
    assert given.endpoint == "http://127.0.0.1:9000" and given.allow_http and given.region == "eu-west-1"
    from_env = resolve_location("s3://bkt1/p", None, env)
    assert (from_env.access_key_id, from_env.session_token) == ("env-id", "env-token")

    (tmp_path / "credentials").write_text("[default]\naws_access_key_id = d-id\naws_secret_access_key = d-s\n"
                                          "[work]\naws_access_key_id = w-id\naws_secret_access_key = w-s\n")
    (tmp_path / "config").write_text("[profile work]\nregion = ap-south-1\nendpoint_url = https://s3.example\n")
    files = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "AWS_CONFIG_FILE": str(tmp_path / "config")}
    default = resolve_location("s3://bkt1", None, files)
    assert (default.access_key_id, default.region, default.endpoint) == ("d-id", "us-east-1", None)
    work = resolve_location("s3://bkt1", None, {**files, "AWS_PROFILE": "work"})
    assert (work.access_key_id, work.secret_access_key) == ("w-id", "w-s")
    assert (work.region, work.endpoint, work.allow_http) == ("ap-south-1", "https://s3.example", False)
    assert "w-s" not in repr(work) and "w-id" not in repr(work)
    with pytest.raises(StorageError, match="no aws_secret_access_key"):
        resolve_location("s3://bkt1", {"aws_access_key_id": "only-id"}, {})


def test_a_store_from_the_profile_files_reaches_the_server(s3_server, s3_url, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    (tmp_path / "credentials").write_text("[ci]\naws_access_key_id = p-id\naws_secret_access_key = p-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    store = open_store(s3_url)
    assert store.location.access_key_id == "p-id"
    store.publish("refs", b"from a profile")
    assert store.get("refs") == b"from a profile"


def test_urls_parse_into_bucket_and_prefix():
    assert parse_s3_url("s3://bucket1") == ("bucket1", "")
    assert parse_s3_url("s3://bucket1/a/b/") == ("bucket1", "a/b")
    for bad in ("s3://bk/x", "s3://Bucket/x", "s3://bucket1/a/../b", "s3://key:secret@bucket1/x"):
        with pytest.raises(StorageError) as info:
            parse_s3_url(bad)
        assert "secret" not in str(info.value)


def test_without_obstore_s3_paths_name_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensordb.storage.object_store")
    monkeypatch.setitem(sys.modules, "obstore", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r'pip install "tensordb\[s3\]"'):
        open_store("s3://bucket1/x")


def test_importing_tensordb_does_not_import_obstore():
    code = "import sys, tensordb; print('obstore' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# -- prefetch ------------------------------------------------------------------------------------------


def test_prefetch_fetches_concurrently_into_the_cache(s3):
    keys = [f"chunks/{i}" for i in range(16)]
    for key in keys:
        s3.put(key, key.encode() * 100)
    s3.publish("refs", b"mutable")
    s3.cache.clear()  # as if another process wrote it: this machine has nothing cached
    in_flight, peak, lock = [0], [0], threading.Lock()

    def slow_gets(kind, key, send):
        if kind != "get":
            return send()
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            time.sleep(0.05)
            return send()
        finally:
            with lock:
                in_flight[0] -= 1

    s3.intercept = slow_gets
    s3.requests.reset()
    start = time.monotonic()
    s3.prefetch(keys + ["refs"])  # the mutable key is not prefetched
    s3.prefetch(keys)  # keys in flight are not fetched twice
    assert s3.get("chunks/15") == b"chunks/15" * 100  # waits for its prefetch, no second GET
    s3.close()
    assert 1 < peak[0] <= 8
    assert time.monotonic() - start < 16 * 0.05  # not one after another
    assert s3.requests.counts() == {"get": 16}
    s3.requests.reset()
    for key in keys:
        assert bytes(s3.map(key)) == key.encode() * 100
    s3.prefetch(keys)  # all cached: nothing to do
    s3.close()
    assert s3.requests.total == 0


def test_a_failing_prefetch_is_only_a_hint(s3):
    keys = [f"chunks/{i}" for i in range(40)]
    s3.intercept = Faults("get", 10**6, error=obstore_error("Server returned non-2xx status code: 400 Bad Request"))
    worker = threading.Thread(target=s3.prefetch, args=(keys,))  # fetches failing at once must not deadlock it
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    s3.close()
    s3.intercept = None
    s3.put("chunks/0", b"later")
    assert s3.get("chunks/0") == b"later"  # the reader fetches it itself


def test_typed_errors_carry_no_client_error_as_their_context(s3, s3_server):
    """The client's error text holds the endpoint and the server's answer; a real S3 answer to a bad
    signature names the access key id. Before, it stayed reachable as ``__context__``."""
    with s3_server.auth_enforced(), pytest.raises(AccessDeniedError) as info:
        s3.get("refs")
    assert info.value.__context__ is None and info.value.__cause__ is None
    with pytest.raises(KeyNotFoundError) as missing:
        s3.get("no/such/key")
    assert missing.value.__context__ is None


def test_an_oversized_immutable_object_is_refused_before_it_is_read_or_cached(s3):
    s3.put("states/forged", b"x" * 5000)
    s3.cache.clear()
    s3.requests.reset()
    with pytest.raises(DataCorruptionError, match="at most 100 bytes"):
        s3.get("states/forged", max_bytes=100)
    assert s3.cache.get(f"{s3.url}/states/forged") is None


def test_a_store_sent_to_a_worker_process_opens_anew_on_the_same_location(s3):
    """Worker processes cannot be forked from a process that used obstore (its runtime hangs there):
    they are started afresh and get the store pickled, which must give a new, working store."""
    import pickle

    s3.put("chunks/a", b"payload")
    copy = pickle.loads(pickle.dumps(s3))
    assert copy is not s3 and copy.url == s3.url and copy.immutable_prefixes == s3.immutable_prefixes
    assert copy.get("chunks/a") == b"payload" and not copy.fork_safe
