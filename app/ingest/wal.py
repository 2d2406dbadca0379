"""The ingest write-ahead log: accepted rows on local disk until ClickHouse has them.

A directory of numbered segments, each a sequence of checksummed records (one accepted
request's rows as an Arrow IPC stream), owned by one process through a `flock`. Each segment
is inserted by exactly one INSERT under a deduplication token recomputed from the file, so a
replay after a crash is dropped by ClickHouse wherever it was stored already; a checkpoint
keeps inserted segments from being replayed. `append` survives a process crash; with
`fsync=True`, `sync()` also survives power loss (group commit). The format and the guarantees
are in docs/ingest.md, sections "The WAL on disk" and "Exactly once into ClickHouse (WAL)"."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc as ipc

log = logging.getLogger("clickpulse.ingest.wal")

MAGIC = b"CPW1"
_HEADER = struct.Struct("<4sII")
SUFFIX = ".wal"
DAMAGED_SUFFIX = ".damaged"
LOCK_NAME = "LOCK"
CHECKPOINT_NAME = "CHECKPOINT"
_CHECKPOINT = struct.Struct("<4sQI")
CHECKPOINT_MAGIC = b"CPC1"


class WalError(Exception):
    """The WAL could not be opened or written."""


class WalLocked(WalError):
    """Another writer (in this or another process) owns this WAL directory."""


def encode_table(table: pa.Table) -> bytes:
    """One request's rows as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_table(payload: bytes) -> pa.Table:
    return ipc.open_stream(payload).read_all()


def frame(payload: bytes) -> bytes:
    """A record: header (magic, length, CRC-32) + payload."""
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def segment_token(seq: int, record_headers: list[bytes]) -> str:
    """The `insert_deduplication_token` of segment `seq` holding records with these headers.

    The headers (length and CRC-32 of each payload) identify the contents without hashing
    the payloads again; the sequence number keeps equal contents in two segments apart. Only
    letters, digits and underscores: the facade inlines identifier-like setting values.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(struct.pack("<Q", seq))
    for header in record_headers:
        digest.update(header)
    return f"wal_{digest.hexdigest()}"


@dataclass
class SegmentContents:
    """What a leftover segment held: the payloads of its valid records, and whether the
    rest of the file (if any) was unreadable."""

    seq: int
    path: str
    payloads: list[bytes]
    valid_bytes: int
    total_bytes: int

    @property
    def damaged(self) -> bool:
        return self.valid_bytes < self.total_bytes

    @property
    def token(self) -> str:
        """The deduplication token the writer used (or would have used) for these records."""
        return segment_token(
            self.seq, [_HEADER.pack(MAGIC, len(p), zlib.crc32(p)) for p in self.payloads]
        )


def read_segment(path: str, seq: int = 0) -> SegmentContents:
    """The valid records of a segment file, up to the first incomplete or corrupt one."""
    with open(path, "rb") as f:
        data = f.read()
    payloads: list[bytes] = []
    pos = 0
    size = _HEADER.size
    while pos + size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, pos)
        end = pos + size + length
        if magic != MAGIC or end > len(data):
            break
        payload = data[pos + size : end]
        if zlib.crc32(payload) != crc:
            break
        payloads.append(payload)
        pos = end
    return SegmentContents(seq, path, payloads, pos, len(data))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    __slots__ = ("dirty", "fd", "headers", "path", "seq", "size")

    def __init__(self, seq: int, path: str, fd: int) -> None:
        self.seq = seq
        self.path = path
        self.fd = fd
        self.size = 0
        self.dirty = False  # appended to since the last fsync
        self.headers: list[bytes] = []  # of the records written, for the token


class Wal:
    """Segments of framed records in one directory, owned by one writer at a time."""

    def __init__(self, directory: str, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self._lock_fd: int | None = None
        self._next_seq = 1
        self._current: _Segment | None = None
        self._sealed: dict[int, int] = {}  # seq -> size, sealed and not yet retired
        self._tokens: dict[int, str] = {}  # seq -> token, of sealed segments
        self._created: dict[int, float] = {}  # seq -> monotonic creation time, until retired
        self._undeleted: list[int] = []  # inserted, but deleting the file failed: retried
        self._checkpoint_fd: int | None = None
        self.checkpoint = 0  # every segment numbered up to this is inserted
        self.skipped_leftovers = 0  # leftovers found inserted already (at or below checkpoint)
        self._unsynced_closed: list[_Segment] = []  # sealed but awaiting the group fsync
        self._dir_dirty = False  # a segment was created since the last fsync of the directory
        # Group commit: every append bumps _appended; a sync covers all appends made before it
        # started.
        self._appended = 0
        self._synced = 0
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_executor: ThreadPoolExecutor | None = None
        self.fsyncs = 0  # number of group fsyncs (for tests and introspection)

    # -- opening --------------------------------------------------------------------------------
    def open(self) -> list[SegmentContents]:
        """Take the directory's lock and return the leftover segments (oldest first).

        Leftovers are what a previous process accepted and did not insert; the caller
        inserts them and then `retire_leftover`s each. New appends go to new segments.
        """
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(os.path.join(self.directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise WalLocked(
                f"the ingest WAL {self.directory!r} is in use by another writer; give each "
                "process its own CLICKPULSE_WAL_DIR (or CLICKPULSE_DATA_DIR)"
            ) from exc
        self._lock_fd = fd
        self._open_checkpoint()
        self._next_seq = max(self._next_seq, self.checkpoint + 1)
        if self.fsync:
            self._sync_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-fsync")
        leftovers = []
        for name in sorted(os.listdir(self.directory)):
            stem, ext = os.path.splitext(name)
            if ext != SUFFIX or not stem.isdigit():
                continue
            seq = int(stem)
            self._next_seq = max(self._next_seq, seq + 1)
            path = os.path.join(self.directory, name)
            if seq <= self.checkpoint:
                # Inserted before the last stop or crash; only its deletion did not happen.
                self.skipped_leftovers += 1
                log.warning(
                    "deleting WAL segment %s: inserted already (checkpoint %d)",
                    path,
                    self.checkpoint,
                )
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.error("could not delete inserted WAL segment %s: %s", path, exc)
                continue
            leftovers.append(read_segment(path, seq))
        for name in os.listdir(self.directory):  # damaged segments keep their numbers too
            stem = name.split(".", 1)[0]
            if stem.isdigit():
                self._next_seq = max(self._next_seq, int(stem) + 1)
        return leftovers

    def _open_checkpoint(self) -> None:
        path = os.path.join(self.directory, CHECKPOINT_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        data = os.pread(fd, _CHECKPOINT.size, 0)
        self._checkpoint_fd = fd
        self.checkpoint = 0
        if len(data) == _CHECKPOINT.size:
            magic, seq, crc = _CHECKPOINT.unpack(data)
            if magic == CHECKPOINT_MAGIC and crc == zlib.crc32(data[:12]):
                self.checkpoint = seq
            else:
                # Damage (or a torn write on power loss): replay everything left; the
                # deduplication tokens drop what was inserted already.
                log.error("ignoring the damaged WAL checkpoint %s", path)
        elif data:
            log.error("ignoring the truncated WAL checkpoint %s", path)
        if len(data) != _CHECKPOINT.size:
            # Allocate its bytes now: later updates overwrite in place, even on a full disk.
            self._write_checkpoint(self.checkpoint)

    def _write_checkpoint(self, seq: int) -> None:
        assert self._checkpoint_fd is not None
        head = struct.pack("<4sQ", CHECKPOINT_MAGIC, seq)
        record = head + struct.pack("<I", zlib.crc32(head))
        try:
            # One 16-byte write in place: never half-visible to a later reader after a crash of
            # this process. Not fsynced: a stale checkpoint after a power loss only means a
            # replay, and the tokens drop it.
            os.pwrite(self._checkpoint_fd, record, 0)
        except OSError as exc:
            log.error("could not update the WAL checkpoint (to %d): %s", seq, exc)
            return
        self.checkpoint = seq

    def mark_inserted(self, seq: int) -> None:
        """Record that segment `seq` (and, inserts being in order, every earlier one) is in
        ClickHouse, before its file is deleted."""
        if seq > self.checkpoint:
            self._write_checkpoint(seq)

    def token(self, seq: int) -> str:
        """The deduplication token of sealed segment `seq`."""
        return self._tokens[seq]

    def retire_leftover(self, segment: SegmentContents) -> None:
        """A replayed leftover is in ClickHouse: delete it (keep a damaged one for inspection)."""
        self.mark_inserted(segment.seq)
        if segment.damaged:
            log.error(
                "WAL segment %s had %d unreadable bytes after %d valid records (a torn write "
                "or damage); its valid records were replayed, the file is kept as %s",
                segment.path,
                segment.total_bytes - segment.valid_bytes,
                len(segment.payloads),
                segment.path + DAMAGED_SUFFIX,
            )
            os.replace(segment.path, segment.path + DAMAGED_SUFFIX)
        else:
            os.unlink(segment.path)

    def close(self) -> None:
        """Close files and release the lock (unretired segments stay for the next start)."""
        if self._current is not None:
            os.close(self._current.fd)
            self._current = None
        for seg in self._unsynced_closed:
            os.close(seg.fd)
        self._unsynced_closed = []
        if self._sync_executor is not None:
            self._sync_executor.shutdown(wait=True)
            self._sync_executor = None
        self._sealed = {}  # unretired segments stay on disk: leftovers of the next open()
        self._tokens = {}
        self._created = {}
        self._undeleted = []
        if self._checkpoint_fd is not None:
            os.close(self._checkpoint_fd)
            self._checkpoint_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- writing ----------------------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        """Bytes in segments not yet retired (sealed ones and the open one)."""
        current = self._current.size if self._current is not None else 0
        return current + sum(self._sealed.values())

    def oldest_age_s(self) -> float:
        """Seconds since the oldest segment this process created and has not retired was
        created (0 when none): how far the inserts are behind the WAL."""
        if not self._created:
            return 0.0
        return max(0.0, time.monotonic() - min(self._created.values()))

    def append(self, payload: bytes) -> int:
        """Write one framed record to the open segment (created on first use); answer the
        segment's number.

        A failed write is undone (the file truncated back) and raises WalError, so a
        half-written record never sits before later ones.
        """
        if self._lock_fd is None:
            raise WalError("the WAL is not open")
        seg = self._current
        if seg is None:
            seg = self._current = self._create_segment()
        record = frame(payload)
        start = seg.size
        try:
            view = memoryview(record)
            while view:
                written = os.write(seg.fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(seg.fd, start)
                os.lseek(seg.fd, start, os.SEEK_SET)
            except OSError:
                # The file cannot be repaired: seal it as is (replay stops at the torn
                # record, whose request was refused) and start a fresh segment next time.
                self._current = None
                self._seal(seg)
                os.close(seg.fd)
            raise WalError(f"writing the ingest WAL failed: {exc}") from exc
        seg.size += len(record)
        seg.dirty = True
        seg.headers.append(record[: _HEADER.size])
        self._appended += 1
        return seg.seq

    def _seal(self, seg: _Segment) -> None:
        self._sealed[seg.seq] = seg.size
        self._tokens[seg.seq] = segment_token(seg.seq, seg.headers)

    def _create_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        path = os.path.join(self.directory, f"{seq:020d}{SUFFIX}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise WalError(f"creating WAL segment {path!r} failed: {exc}") from exc
        self._dir_dirty = True
        self._created[seq] = time.monotonic()
        return _Segment(seq, path, fd)

    def seal(self) -> list[int]:
        """Close the open segment for appends; answer every sealed, unretired segment.

        The writer calls this as it takes all buffered rows for INSERTs (one per segment).
        """
        seg = self._current
        if seg is not None:
            self._current = None
            self._seal(seg)
            if self.fsync:
                # The group fsync closes it: it may have unsynced records, or an fsync of it
                # may be running in the sync thread right now (closing it here would pull
                # the descriptor from under that fsync).
                self._unsynced_closed.append(seg)
            else:
                os.close(seg.fd)
        return sorted(self._sealed)

    def retire(self, seqs: list[int]) -> None:
        """Delete segments whose rows are inserted (the checkpoint first records them).

        A deletion that fails (e.g. a read-only directory) is retried at every later call;
        meanwhile the checkpoint keeps the next start from replaying the segment.
        """
        retry, self._undeleted = self._undeleted, []
        for seq in seqs:
            if self._sealed.pop(seq, None) is None:
                continue
            self._tokens.pop(seq, None)
            self._created.pop(seq, None)
            self.mark_inserted(seq)
            retry.append(seq)
        for seq in retry:
            path = os.path.join(self.directory, f"{seq:020d}{SUFFIX}")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if seq not in self._undeleted:
                    self._undeleted.append(seq)
                log.error(
                    "could not delete inserted WAL segment %s (retried after the next insert; "
                    "the checkpoint keeps it from being replayed): %s",
                    path,
                    exc,
                )

    # -- group commit -------------------------------------------------------------------------------
    async def sync(self) -> None:
        """Return once every record appended before this call is on stable storage.

        One fsync covers all callers that arrive while the previous one runs (group
        commit). A no-op unless the WAL was opened with fsync=True.
        """
        if not self.fsync:
            return
        target = self._appended
        while self._synced < target:
            if self._sync_task is None:
                self._sync_task = asyncio.create_task(self._sync_once(), name="wal-fsync")
            task = self._sync_task
            # shield: a cancelled request must not cancel the fsync other requests wait for
            await asyncio.shield(task)

    async def _sync_once(self) -> None:
        try:
            upto = self._appended
            targets = [s for s in self._unsynced_closed if s.dirty]
            closing = self._unsynced_closed
            self._unsynced_closed = []
            if self._current is not None and self._current.dirty:
                targets.append(self._current)
            for seg in targets:
                seg.dirty = False
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            fds = [s.fd for s in targets]

            def work() -> None:
                for fd in fds:
                    os.fsync(fd)
                if dir_dirty:
                    _fsync_dir(self.directory)

            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._sync_executor, work)
            except OSError as exc:
                for seg in targets:
                    seg.dirty = True
                self._dir_dirty = self._dir_dirty or dir_dirty
                self._unsynced_closed = closing + self._unsynced_closed
                raise WalError(f"fsync of the ingest WAL failed: {exc}") from exc
            for seg in closing:
                os.close(seg.fd)
            self.fsyncs += 1
            self._synced = max(self._synced, upto)
        finally:
            self._sync_task = None
