"""A bounded local cache of immutable objects (chunks, states, commits, indexes) fetched from remote stores.

An entry is one file, named by a hash of its identity ``"<store url>/<key>"``. Immutable objects can
never be stale, so an entry is valid for as long as it is intact; every use verifies that. A file is:

==========  =====================================================================
magic       8 bytes ``TDBCACHE``
version     u16 (1); an entry of another version is a miss and is removed
reserved    u16 (0)
length      u64, the payload's byte length
checksum    16 bytes, xxh3-128 of the payload
id_length   u32, then the identity in UTF-8 (a file-name hash collision is a miss, not wrong data)
padding     zeros up to a multiple of 64 bytes, so the payload is aligned for arrays
payload     the object's bytes
==========  =====================================================================

Several processes may share the directory: an entry is written to a private temp file and renamed
into place, so a reader sees a whole entry or none. Entries are not fsynced: a file torn by a crash
fails its checksum and is a miss. Recency is the file's mtime, set on write and on every hit (atime
is often not kept); past ``max_bytes`` the least recently used entries are deleted.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Sequence

import xxhash

from ..errors import StorageError

log = logging.getLogger(__name__)

MAGIC = b"TDBCACHE"
VERSION = 1
_HEADER = struct.Struct("<8sHHQ16sI")
_ALIGN = 64
_SUFFIX = ".obj"
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_S = 3600.0  # a temp file this old belongs to a writer that died
_RESCAN_EVERY = 64  # puts between directory scans, so other processes' entries count against the bound

DEFAULT_DIR = os.path.join("~", ".cache", "tensordb", "objects")
DEFAULT_BYTES = 2 << 30
DIR_ENV = "TENSORDB_CACHE_DIR"
BYTES_ENV = "TENSORDB_CACHE_BYTES"

Buffers = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]


class ObjectCache:
    """Immutable objects by identity in ``directory``, at most about ``max_bytes`` of files; thread-safe."""

    def __init__(self, directory: str, max_bytes: int):
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise StorageError(f"object cache bound: expected a byte count >= 0, got {max_bytes!r}")
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.max_bytes = max_bytes
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)  # entries may hold private data
        except OSError as e:
            raise StorageError(f"cannot create the object cache directory {self.directory}: {e}") from e
        if not os.path.isdir(self.directory):
            raise StorageError(f"object cache directory {self.directory} is not a directory")
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes of entries on disk as last counted, plus this process's puts since
        self._puts_since_scan = 0
        self._last_stamp = 0

    @classmethod
    def default(cls) -> ObjectCache:
        """The cache in ``$TENSORDB_CACHE_DIR`` (default ``~/.cache/tensordb/objects``), bounded by
        ``$TENSORDB_CACHE_BYTES`` (default 2 GiB; a count of bytes, or with a K, M, G or T suffix)."""
        directory = os.environ.get(DIR_ENV) or DEFAULT_DIR
        raw = os.environ.get(BYTES_ENV)
        return cls(directory, DEFAULT_BYTES if raw is None or not raw.strip() else parse_bytes(raw, BYTES_ENV))

    def __repr__(self) -> str:
        return f"ObjectCache({self.directory!r}, max_bytes={self.max_bytes})"

    # -- reading ------------------------------------------------------------------------------
    def get(self, identity: str) -> memoryview | None:
        """A read-only view of the cached object, checksum verified; ``None`` if absent or damaged."""
        path = self._path(identity)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size == 0:  # mmap refuses empty files
                    self._remove_damaged(path, st.st_ino, "empty file")
                    return None
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                inode = st.st_ino
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("object cache: cannot read %s: %s", path, e)
            return None
        view = memoryview(mm)
        payload, problem = _parse_entry(view, identity)
        if payload is None:
            view.release()
            mm.close()
            self._remove_damaged(path, inode, problem)
            return None
        self._touch(path)
        return payload

    def __contains__(self, identity: str) -> bool:
        """Whether an entry file exists for ``identity`` (not verified: :meth:`get` does that)."""
        return os.path.exists(self._path(identity))

    # -- writing ------------------------------------------------------------------------------
    def put(self, identity: str, data: Buffers) -> memoryview:
        """Keep ``data`` (bytes, a buffer, or buffers back to back) as the object ``identity``; return a
        read-only view of it. An object larger than the whole bound is returned but not kept."""
        parts = _as_byte_views(data)
        length = sum(p.nbytes for p in parts)
        name = identity.encode("utf-8")
        offset = _payload_offset(len(name))
        if offset + length > self.max_bytes:
            return _joined(parts)
        digest = xxhash.xxh3_128()
        for p in parts:
            digest.update(p)
        header = _HEADER.pack(MAGIC, VERSION, 0, length, digest.digest(), len(name)) + name
        header += b"\0" * (offset - len(header))
        path = self._path(identity)
        try:
            fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.directory)
        except OSError as e:
            log.warning("object cache: cannot write in %s: %s", self.directory, e)
            return _joined(parts)
        try:
            with open(fd, "w+b") as f:
                f.write(header)
                for p in parts:
                    f.write(p)
                f.flush()
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._stamp(temp)
            os.replace(temp, path)  # atomic: readers in any process see the whole entry or none
        except OSError as e:
            _unlink_quietly(temp)
            log.warning("object cache: cannot write %s: %s", path, e)
            return _joined(parts)
        self._account(offset + length)
        return memoryview(mm)[offset : offset + length]

    def discard(self, identity: str) -> None:
        """Forget the object ``identity``; absent is not an error."""
        path = self._path(identity)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise StorageError(f"cannot remove the cache entry {path}: {e}") from e
        with self._lock:
            if self._total is not None:
                self._total = max(0, self._total - size)

    def clear(self) -> None:
        """Delete every entry (other files in the directory are left alone)."""
        for entry in self._scan():
            _unlink_quietly(entry[2])
        with self._lock:
            self._total = 0

    def total_bytes(self) -> int:
        """The bytes of all entry files now on disk (a directory scan)."""
        return sum(size for _, size, _ in self._scan())

    # -- bookkeeping --------------------------------------------------------------------------
    def _path(self, identity: str) -> str:
        return os.path.join(self.directory, xxhash.xxh3_128_hexdigest(identity.encode("utf-8")) + _SUFFIX)

    def _stamp(self, path: str) -> None:
        """Set ``path``'s mtime to now, strictly later than any stamp before in this process (the
        kernel's file clock is coarse, and LRU order must hold for quick successions)."""
        with self._lock:
            now = max(time.time_ns(), self._last_stamp + 1)
            self._last_stamp = now
        os.utime(path, ns=(now, now))

    def _touch(self, path: str) -> None:
        try:
            self._stamp(path)
        except OSError:
            pass  # evicted meanwhile, or a read-only directory: recency is a hint

    def _remove_damaged(self, path: str, inode: int, problem: str) -> None:
        log.warning("object cache: removing damaged entry %s (%s)", path, problem)
        try:
            if os.stat(path).st_ino == inode:  # another process may have just renamed a good entry over it
                os.unlink(path)
        except OSError:
            pass

    def _account(self, size: int) -> None:
        with self._lock:
            self._puts_since_scan += 1
            if self._total is not None:
                self._total += size
            needs_scan = self._total is None or self._total > self.max_bytes or self._puts_since_scan >= _RESCAN_EVERY
        if needs_scan:
            self._evict()

    def _evict(self) -> None:
        """Count the entries on disk and delete the least recently used ones past the bound."""
        with self._lock:
            entries = sorted(self._scan())
            total = sum(size for _, size, _ in entries)
            for _, size, path in entries:
                if total <= self.max_bytes:
                    break
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass  # another process evicted it first
                except OSError as e:
                    log.warning("object cache: cannot evict %s: %s", path, e)
                    continue
                total -= size
            self._total = total
            self._puts_since_scan = 0

    def _scan(self) -> list[tuple[int, int, str]]:
        """(mtime in ns, size, path) of every entry; removes temp files left by writers that died."""
        found = []
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if e.name.endswith(_SUFFIX) and e.is_file(follow_symlinks=False):
                        found.append((st.st_mtime_ns, st.st_size, e.path))
                    elif e.name.startswith(_TEMP_PREFIX) and time.time() - st.st_mtime > _STALE_TEMP_S:
                        _unlink_quietly(e.path)
        except OSError as e:
            log.warning("object cache: cannot list %s: %s", self.directory, e)
        return found


def parse_bytes(text: str, where: str = "byte count") -> int:
    """``"1048576"``, ``"512M"``, ``"2GiB"`` → bytes (K, M, G, T are powers of 1024); else ``StorageError``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*", text, flags=re.IGNORECASE)
    if match is None:
        raise StorageError(f"{where}: expected a byte count such as 2147483648, 512M or 2GiB, got {text!r}")
    power = " kmgt".index(match.group(2).lower()) if match.group(2) else 0
    return int(match.group(1)) << (10 * power)


def _parse_entry(view: memoryview, identity: str) -> tuple[memoryview | None, str]:
    """The payload of an entry file, or ``None`` and what is wrong with it."""
    if view.nbytes < _HEADER.size:
        return None, f"{view.nbytes} bytes, shorter than the header"
    magic, version, _, length, checksum, id_length = _HEADER.unpack_from(view)
    if magic != MAGIC:
        return None, "not a cache entry"
    if version != VERSION:
        return None, f"entry version {version}, expected {VERSION}"
    offset = _payload_offset(id_length)
    if view.nbytes != offset + length:
        return None, f"{view.nbytes} bytes, expected {offset + length}"
    if bytes(view[_HEADER.size : _HEADER.size + id_length]) != identity.encode("utf-8"):
        return None, "the entry is of another identity"
    payload = view[offset:]
    if xxhash.xxh3_128_digest(payload) != checksum:
        return None, "checksum mismatch"
    return payload, ""


def _payload_offset(id_length: int) -> int:
    return -(-(_HEADER.size + id_length) // _ALIGN) * _ALIGN


def _as_byte_views(data: Buffers) -> list[memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = [data]
    return [memoryview(p).cast("B") if memoryview(p).format != "B" else memoryview(p) for p in data]


def _joined(parts: list[memoryview]) -> memoryview:
    if len(parts) == 1:
        return parts[0].toreadonly()
    return memoryview(b"".join(parts))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
