"""A store in a local directory, crash-safe through write-to-temp, fsync and rename."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from ..errors import KeyNotFoundError, LockedError, PreconditionFailedError, StorageError
from .base import Store, check_key, check_size, content_version

_TMP_MARK = ".tdb-tmp-"
_LOCK_FILE = "LOCK"
_LEASE_DIR = "locks"  # lease files: bookkeeping of the store, not objects
_NOT_OBJECTS = (_LOCK_FILE, _LEASE_DIR)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a file")


class _FileLock:
    """An ``flock`` on the LOCK file: the kernel drops it when the holder dies."""

    def __init__(self, fd: int):
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class LocalStore(Store):
    """Objects are files below ``root``. ``put`` never leaves a partial file under a key."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._real_root = os.path.realpath(self.root)
        self.url = self.root
        # Directory → number of its latest change not yet known durable. Writes come from background
        # threads too; a directory leaves this map only once an fsync begun after its change has completed.
        self._dirty_dirs: dict[str, int] = {}
        self._changes = 0
        self._dirs_lock = threading.Lock()

    def __reduce__(self) -> tuple:
        # A handle in another process (a Ray or PyTorch worker) is a fresh store on the same directory.
        return (LocalStore, (self.root,))

    def _path(self, key: str) -> str:
        check_key(key)
        path = os.path.join(self.root, *key.split("/"))
        # Symlinks inside the dataset may point within it, never out of it: not followed, for reads or writes.
        real = os.path.realpath(path)
        if real != path and real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise StorageError(
                f"{self.url}: {key!r} resolves to {real!r}, outside the dataset directory "
                f"(a symbolic link); refusing to follow it"
            )
        return path

    @contextmanager
    def _reading(self, key: str, verb: str = "reading") -> Iterator[None]:
        """Turn OS errors while reading ``key`` into the store's errors."""
        try:
            yield
        except FileNotFoundError:
            raise KeyNotFoundError(f"{self.url}: no object {key!r}") from None
        except OSError as e:
            raise StorageError(f"{self.url}: {verb} {key!r} failed: {e}") from e

    def _open_regular(self, key: str, buffering: int = -1) -> BinaryIO:
        """Open ``key`` for reading, refusing anything but a regular file.

        ``O_NONBLOCK`` keeps a FIFO from blocking the open; ``fstat`` of the open
        file (not of the path) then says what was really opened.
        """
        fd = os.open(self._path(key), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise StorageError(f"{self.url}: {key!r} is {_file_kind(mode)}, not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=buffering)
        except BaseException:
            os.close(fd)
            raise

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        with self._reading(key), self._open_regular(key) as f:
            check_size(self.url, key, os.fstat(f.fileno()).st_size, max_bytes)
            return f.read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with self._reading(key), self._open_regular(key) as f:
            f.seek(start)
            return f.read(length)

    def read_into(self, key: str, start: int, out: memoryview) -> None:
        got = 0
        with self._reading(key), self._open_regular(key, buffering=0) as f:
            f.seek(start)
            while got < len(out):
                n = f.readinto(out[got:])
                if not n:
                    break
                got += n
        if got != len(out):
            from ..errors import DataCorruptionError

            raise DataCorruptionError(
                f"{self.url}/{key}: file is truncated: expected {len(out)} bytes at {start}, got {got}"
            )

    def map(self, key: str) -> memoryview:
        with self._reading(key, "mapping"), self._open_regular(key) as f:
            if os.fstat(f.fileno()).st_size == 0:
                return memoryview(b"")
            return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))

    def _write_file(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        tmp = f"{path}{_TMP_MARK}{uuid.uuid4().hex}"
        try:
            self._make_dirs(directory)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                for part in data if isinstance(data, (list, tuple)) else (data,):
                    view = memoryview(part).cast("B")
                    while view:
                        written = self._os_write(fd, view)
                        if written <= 0:
                            raise OSError(errno.EIO, "write made no progress")
                        view = view[written:]
                self._os_fsync(fd)
            finally:
                os.close(fd)
            self._os_replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StorageError(f"{self.url}: writing {key!r} failed: {e}") from e
        with self._dirs_lock:
            self._mark_changed(directory)

    # The system calls that make writes durable, as methods so fault-injection tests can fail them.
    def _os_write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def _os_fsync(self, fd: int) -> None:
        os.fsync(fd)

    def _os_replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def put(self, key: str, data: bytes | memoryview | Sequence[bytes | memoryview]) -> None:
        self._write_file(key, data)

    # -- directory durability ------------------------------------------------------------------
    def _mark_changed(self, directory: str) -> None:
        """Record that ``directory`` got or lost an entry; call with ``_dirs_lock`` held."""
        self._changes += 1
        self._dirty_dirs[directory] = self._changes

    def _make_dirs(self, directory: str) -> None:
        """Create ``directory`` and its missing parents, marking the parent of each one made as changed.

        The lock is held throughout, so no thread can see (and rely on) a new directory
        before the change to its parent is recorded for the next ``_sync_dirs``.
        """
        with self._dirs_lock:
            missing = []
            while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
                missing.append(directory)
                directory = os.path.dirname(directory)
            for new in reversed(missing):
                try:
                    os.mkdir(new)
                except FileExistsError:
                    if not os.path.isdir(new):
                        raise
                self._mark_changed(os.path.dirname(new))

    def _fsync_dir(self, directory: str) -> None:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # removed since: none of its entries remain to be made durable
        except OSError as e:
            raise StorageError(f"{self.url}: fsync of {directory!r} failed: {e}") from e
        try:
            self._os_fsync(fd)
        except OSError as e:
            raise StorageError(f"{self.url}: fsync of {directory!r} failed: {e}") from e
        finally:
            os.close(fd)

    def _sync_dirs(self) -> None:
        """fsync every directory changed before this call; return only when all those fsyncs completed.

        Concurrent callers each fsync what was changed at their start (a directory another
        thread is still fsyncing is still marked changed), so none returns early.
        """
        with self._dirs_lock:
            pending = sorted(self._dirty_dirs.items())
        for directory, change in pending:
            self._fsync_dir(directory)
            with self._dirs_lock:
                if self._dirty_dirs.get(directory) == change:
                    del self._dirty_dirs[directory]

    def publish(self, key: str, data: bytes) -> None:
        # Everything the new pointer refers to must be durable before the pointer itself.
        self._sync_dirs()
        self._write_file(key, data)
        self._sync_dirs()

    def swap(self, key: str, data: bytes, expected: str | None) -> None:
        # Writers on a local path exclude each other with the writer lock, so compare-then-replace is atomic.
        try:
            current = content_version(self.get(key))
        except KeyNotFoundError:
            current = None
        if current != expected:
            raise PreconditionFailedError(
                f"{self.url}: {key!r} changed since it was read (expected version {expected}, found {current})"
            )
        self.publish(key, data)

    def _unlink(self, key: str) -> str | None:
        """Remove the file of ``key``; its directory, or None if there was no file."""
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"{self.url}: deleting {key!r} failed: {e}") from e
        return os.path.dirname(path)

    def delete(self, key: str) -> None:
        directory = self._unlink(key)
        if directory is not None:
            self._fsync_dir(directory)

    def delete_many(self, keys: Sequence[str]) -> None:
        directories = {d for d in map(self._unlink, keys) if d is not None}
        for directory in sorted(directories):
            self._fsync_dir(directory)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for dirpath, dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel == "." and _LEASE_DIR in dirs:
                dirs.remove(_LEASE_DIR)
            for name in files:
                if _TMP_MARK in name or (rel == "." and name == _LOCK_FILE):
                    continue
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def temp_files(self) -> list[str]:
        """Leftovers of writes interrupted by a crash (removed by ``vacuum``)."""
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            found += [os.path.join(dirpath, n) for n in files if _TMP_MARK in n]
        return found

    def size(self, key: str) -> int:
        with self._reading(key, "sizing"):
            return os.stat(self._path(key)).st_size

    def modified_time(self, key: str) -> float:
        try:
            return os.stat(self._path(key)).st_mtime
        except OSError:
            return 0.0

    def acquire_writer_lock(self, timeout: float = 0.0, create: bool = True) -> _FileLock:
        if not create and not os.path.isdir(self.root):
            raise StorageError(f"{self.url}: the directory does not exist (or is not a directory); not creating it")
        try:
            self._make_dirs(self.root)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot open the dataset directory for writing: {e}") from e
        fd = self._open_lock_file(os.path.join(self.root, _LOCK_FILE))
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _FileLock(fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(
                        f"{self.url} is locked by another writer; open it with read_only=True "
                        f"to read, or pass lock_timeout to wait"
                    ) from None
                time.sleep(0.05)

    def _open_lock_file(self, path: str, create: bool = True) -> int:
        """Open a lock file without following a symlink (it could lead out of the dataset) or blocking.

        Without ``create`` it is opened read-only (``flock`` needs no more) and
        ``FileNotFoundError`` is passed on.
        """
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if not create:
                raise
            raise StorageError(f"{self.url}: cannot create the lock file {path!r}: no such directory") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StorageError(f"{path} is a symbolic link; refusing to follow it for a lock file") from None
            raise StorageError(f"{self.url}: cannot open the lock file {path!r}: {e}") from e
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StorageError(f"{path} is {_file_kind(mode)}, not a regular file; cannot use it as a lock file")
        return fd

    # -- leases: locks the kernel releases when their holder dies ---------------------------------
    def _lease_path(self, name: str) -> str:
        check_key(name)
        return self._path(f"{_LEASE_DIR}/{name}")

    def hold_lease(self, name: str) -> _FileLock:
        path = self._lease_path(name)
        try:
            self._make_dirs(os.path.dirname(path))
        except OSError as e:
            raise StorageError(f"{self.url}: cannot create the lease {name!r}: {e}") from e
        fd = self._open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"{self.url}: the lease {name!r} is held by another process or thread") from None
        return _FileLock(fd)

    def lease_held(self, name: str) -> bool:
        try:
            fd = self._open_lock_file(self._lease_path(name), create=False)
        except FileNotFoundError:
            return False
        try:
            # flock conflicts between any two open files, even of one process: a fresh one tests every holder.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the test lock, if it was taken
        return False

    def drop_lease(self, name: str) -> None:
        path = self._lease_path(name)
        try:
            fd = self._open_lock_file(path, create=False)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)  # under the lock: no holder can be cut off
        except BlockingIOError:
            return  # held: its holder still needs it
        except FileNotFoundError:
            return
        finally:
            os.close(fd)
        with self._dirs_lock:
            self._mark_changed(os.path.dirname(path))

    def entries(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"{self.url}: listing the directory failed: {e}") from e
        # Leftovers of interrupted writes are the store's own, like LOCK.
        return sorted(n for n in names if n not in _NOT_OBJECTS and _TMP_MARK not in n)

    def clear(self) -> None:
        import shutil

        if os.path.isdir(self.root):
            for name in os.listdir(self.root):
                if name in _NOT_OBJECTS:  # held locks must stay valid
                    continue
                path = os.path.join(self.root, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            with self._dirs_lock:
                inside = self.root + os.sep  # those directories are gone; the root and its parent remain
                self._dirty_dirs = {d: n for d, n in self._dirty_dirs.items() if not d.startswith(inside)}
                self._mark_changed(self.root)
