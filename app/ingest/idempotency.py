"""`Idempotency-Key` on `POST /v1/events`: a retried request gets the first answer back.

The first 200 answer for `(org, key)` is kept with a hash of the body, in Redis (shared by
every node) or else in a SQLite file in the data dir; the same key and body get it again,
another body 422, a concurrent duplicate 409, and a failed attempt leaves no trace. This store
only answers repeats quickly and exactly: what keeps a retry that ran afresh from counting twice
is the event ids derived from the key (app.ingest.parse), which the writer's window and the
INSERT tokens deduplicate. See docs/ingest.md, section "Idempotency"."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

log = logging.getLogger("clickpulse.ingest.idempotency")

MAX_KEY_LENGTH = 255
# A claim of a request being answered; a crashed node's claim blocks its key this long (Redis).
PENDING_TTL_S = 30
_PURGE_EVERY = 1000


def valid_key(key: str) -> bool:
    """1–255 printable ASCII characters (what Stripe and the IETF draft allow in practice)."""
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Begin:
    """What `begin` found: `new` (claimed: answer, then `finish` or `abandon`), `done` (the
    stored answer in `response`), `busy` (a concurrent duplicate), `mismatch` (another body)."""

    state: str
    response: bytes = b""


class _Record(msgspec.Struct):
    state: str  # "pending" | "done"
    body: str
    owner: str
    response: bytes = b""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Record).decode


def _judge(record: _Record, body: str, owner: str) -> Begin | None:
    """The answer for an existing live record; None when it may be taken over."""
    if record.state == "done":
        return Begin("done", record.response) if record.body == body else Begin("mismatch")
    if record.owner == owner:
        return Begin("busy")
    return None


class LocalIdempotencyStore:
    """Keys in a SQLite file (single process). Calls are synchronous and short (a read and a
    write of one row): running them on the event loop keeps check-and-claim atomic."""

    def __init__(self, path: str, ttl_s: int) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self.owner = uuid.uuid4().hex  # this process: claims of another owner are stale
        self._db: sqlite3.Connection | None = None
        self._calls = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a crash of this process; after a power loss
            # the last ones may be gone (the event ids still deduplicate the retry).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS idempotency (org_id INTEGER NOT NULL, "
                "key_hash TEXT NOT NULL, record BLOB NOT NULL, expires_at REAL NOT NULL, "
                "PRIMARY KEY (org_id, key_hash))"
            )
            self._db = db
        return self._db

    def _put(self, org_id: int, key: str, record: _Record, ttl_s: float) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
            (org_id, key, _encode(record), time.time() + ttl_s),
        )

    async def begin(self, org_id: int, key: str, body: str) -> Begin:
        db = self._conn()
        now = time.time()
        self._calls += 1
        if self._calls % _PURGE_EVERY == 0:
            db.execute("DELETE FROM idempotency WHERE expires_at < ?", (now,))
        row = db.execute(
            "SELECT record, expires_at FROM idempotency WHERE org_id = ? AND key_hash = ?",
            (org_id, key),
        ).fetchone()
        if row is not None and row[1] > now:
            found = _judge(_decode(row[0]), body, self.owner)
            if found is not None:
                return found
        self._put(org_id, key, _Record("pending", body, self.owner), self.ttl_s)
        return Begin("new")

    async def finish(self, org_id: int, key: str, body: str, response: bytes) -> None:
        self._put(org_id, key, _Record("done", body, self.owner, response), self.ttl_s)

    async def abandon(self, org_id: int, key: str) -> None:
        self._conn().execute(
            "DELETE FROM idempotency WHERE org_id = ? AND key_hash = ?", (org_id, key)
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class RedisIdempotencyStore:
    """Keys in Redis (`cp:ingest:idem:<org>:<sha256 of key>`), shared by every node."""

    def __init__(self, redis: Any, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.owner = uuid.uuid4().hex

    @staticmethod
    def _name(org_id: int, key: str) -> str:
        return f"cp:ingest:idem:{org_id}:{key}"

    async def begin(self, org_id: int, key: str, body: str) -> Begin:
        name = self._name(org_id, key)
        claim = _encode(_Record("pending", body, self.owner))
        for _ in range(3):  # a record can expire between the SET and the GET
            if await self.redis.set(name, claim, nx=True, ex=PENDING_TTL_S):
                return Begin("new")
            raw = await self.redis.get(name)
            if raw is None:
                continue
            found = _judge(_decode(raw), body, self.owner)
            # Another node's claim: it may be answering right now; it expires if it crashed.
            return found if found is not None else Begin("busy")
        return Begin("busy")

    async def finish(self, org_id: int, key: str, body: str, response: bytes) -> None:
        record = _encode(_Record("done", body, self.owner, response))
        await self.redis.set(self._name(org_id, key), record, ex=self.ttl_s)

    async def abandon(self, org_id: int, key: str) -> None:
        await self.redis.delete(self._name(org_id, key))

    def close(self) -> None:
        pass
