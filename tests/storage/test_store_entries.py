"""What the core needs to leave a folder that is not a dataset untouched.

``acquire_writer_lock(create=False)`` never creates the directory, and
``entries()`` lists every top-level name (tensordb's or not) except the store's
own lock bookkeeping, so the core can tell a dataset or an empty folder from
someone else's files before it clears anything.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tensordb.errors import StorageError
from tensordb.storage import LocalStore, MemoryStore


def test_lock_without_create_does_not_make_the_directory(tmp_path):
    root = tmp_path / "absent"
    store = LocalStore(str(root))
    with pytest.raises(StorageError, match="does not exist") as info:
        store.acquire_writer_lock(create=False)
    assert str(root) in str(info.value)
    assert not root.exists()


def test_lock_without_create_works_on_an_existing_directory(tmp_path):
    store = LocalStore(str(tmp_path))
    lock = store.acquire_writer_lock(create=False)
    lock.release()


def test_lock_with_create_makes_the_directory(tmp_path):
    root = tmp_path / "a" / "b"
    LocalStore(str(root)).acquire_writer_lock(create=True).release()
    assert root.is_dir()


def test_local_entries_list_foreign_files_but_not_the_lock(tmp_path):
    store = LocalStore(str(tmp_path / "s"))
    assert store.entries() == []
    store.acquire_writer_lock().release()
    assert store.entries() == []
    store.put("chunks/a", b"x")
    store.put("refs", b"r")
    (tmp_path / "s" / "notes.txt").write_text("mine")
    os.mkdir(tmp_path / "s" / "photos")
    assert store.entries() == ["chunks", "notes.txt", "photos", "refs"]


def test_memory_entries_are_the_top_level_names():
    store = MemoryStore.named(f"entries-{uuid.uuid4().hex}")
    assert store.entries() == []
    store.put("chunks/a", b"x")
    store.put("chunks/b", b"x")
    store.publish("refs", b"r")
    assert store.entries() == ["chunks", "refs"]
