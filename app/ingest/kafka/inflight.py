"""The bridge's in-flight file: the offset ranges it is inserting and has not committed yet.

Read once at start, so a restarted bridge replays exactly those ranges with the same
deduplication tokens (docs/ingest.md, "Exactly once from Kafka").
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass

log = logging.getLogger("clickpulse.ingest.kafka")


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Messages `lo`..`hi` (inclusive) of one partition, inserted as one block with `token`."""

    partition: int
    lo: int
    hi: int
    token: str
    rows: int = 0


class InflightFile:
    """The bridge's record of the ranges it is inserting and has not committed yet.

    Written (fsynced, atomically replaced) before the INSERTs of a cycle and emptied after
    their offsets were committed; read once at start. One small JSON file per group and topic
    under `<data_dir>/kafka-bridge/`.
    """

    def __init__(self, directory: str, group: str, topic: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{group}.{topic}")
        self.directory = directory
        self.path = os.path.join(directory, f"{safe}.inflight.json")
        self.group, self.topic = group, topic

    def load(self) -> dict[int, OffsetRange]:
        """The ranges a previous run left uncommitted (empty when it stopped cleanly)."""
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            # Only a clearing write (not fsynced: see `write`) can be torn by a power loss, and
            # it cleared ranges already committed; anything else is disk damage.
            log.error("ignoring unreadable %s: %s", self.path, exc)
            return {}
        if doc.get("topic") != self.topic or doc.get("group") != self.group:
            log.warning("ignoring %s: it is for another topic or group", self.path)
            return {}
        ranges = [OffsetRange(**r) for r in doc.get("ranges", [])]
        return {r.partition: r for r in ranges}

    def write(self, ranges: dict[int, OffsetRange], *, durable: bool = True) -> None:
        """Replace the record with `ranges`; `durable` (fsync) before inserting them, since
        the replay depends on it. Clearing committed ranges need not be: a stale record of a
        committed range is recognised and skipped at the next start."""
        if not ranges and not os.path.exists(self.path):
            return
        os.makedirs(self.directory, exist_ok=True)
        doc = {
            "group": self.group,
            "topic": self.topic,
            "ranges": [asdict(r) for _, r in sorted(ranges.items())],
        }
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(doc, indent=1).encode())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if not durable:
            return
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def ranges_text(ranges: dict[int, OffsetRange]) -> str:
    """`[p] lo..hi, …` for log lines."""
    return ", ".join(f"[{r.partition}] {r.lo}..{r.hi}" for _, r in sorted(ranges.items()))
