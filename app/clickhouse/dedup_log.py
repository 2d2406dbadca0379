"""Repair what a crash of embedded chDB can leave in a table's insert-deduplication log.

chDB logs an INSERT's block id before it renames the part into place, so a process killed
between the two leaves a remembered block without its part, and the replay under the same
token is then dropped in that one table: the batch is lost there. Before chDB opens the data
dir, this puts ClickHouse's invariant back (a remembered block has its part on disk) by
appending a `DROP` record for a table's last logged part when that part is missing. Only run
while no process holds the data dir. The trace, the reasoning and the limits are in
docs/ingest.md, section "Exactly once into ClickHouse (WAL)" ("A crash inside one table's
commit")."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("clickpulse.clickhouse")

# <partition id>_<min block>_<max block>_<level>[_<mutation>]; partition ids are [A-Za-z0-9-]
# (numbers joined by '-', a hash, or "all"). tmp_*, detached/ and files never match.
_PART = re.compile(r"^([A-Za-z0-9-]+)_(\d+)_(\d+)_(\d+)(?:_(\d+))?$")
_LOG = re.compile(r"^deduplication_log_(\d+)\.txt$")
ADD, DROP = "1", "2"


@dataclass(frozen=True)
class ForgottenBlocks:
    """Block ids whose part a crash lost, forgotten so that a replay stores them again."""

    table: str  # <database>.<table>
    part: str
    block_ids: tuple[str, ...]


def _part_range(name: str) -> tuple[str, int, int] | None:
    match = _PART.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))


def _on_disk(table_dir: Path, part: str) -> bool:
    """Whether `part` or a part covering its blocks (a merge of it) is in `table_dir`."""
    wanted = _part_range(part)
    if wanted is None:
        return True  # a name this code does not understand: leave the log alone
    partition, low, high = wanted
    for entry in table_dir.iterdir():
        have = _part_range(entry.name)
        covers = have and have[0] == partition and have[1] <= low and have[2] >= high
        if covers and entry.is_dir():
            return True
    return False


def _logs(table_dir: Path) -> list[Path]:
    found = []
    logs_dir = table_dir / "deduplication_logs"
    if logs_dir.is_dir():
        for entry in logs_dir.iterdir():
            match = _LOG.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def _repair_table(name: str, table_dir: Path) -> ForgottenBlocks | None:
    logs = _logs(table_dir)
    records: list[list[str]] = []
    for path in logs:
        text = path.read_bytes().decode("utf-8", "replace")
        if text and not text.endswith("\n"):
            # A torn record (power loss): ClickHouse reports it at load; appending after it
            # would glue two records together.
            log.warning("deduplication log %s ends in a torn record; not repaired", path)
            return None
        records += [line.split("\t") for line in text.splitlines() if line]
    if not records or len(records[-1]) != 3 or records[-1][0] != ADD:
        return None
    part = records[-1][1]
    if _on_disk(table_dir, part):
        return None
    # The block ids of that last part (one per block; several when one part holds several).
    block_ids = []
    for record in reversed(records):
        if len(record) != 3 or record[0] != ADD or record[1] != part:
            break
        block_ids.append(record[2])
    block_ids.reverse()
    with open(logs[-1], "ab") as out:
        out.write("".join(f"{DROP}\t{part}\t{b}\n" for b in block_ids).encode())
        out.flush()
        os.fsync(out.fileno())
    return ForgottenBlocks(name, part, tuple(block_ids))


def repair_deduplication_logs(data_dir: str | os.PathLike[str]) -> list[ForgottenBlocks]:
    """Forget the block ids whose part a crash lost, in every table of chDB's `data_dir`.

    Call before the engine opens `data_dir` (it reads the logs once, at start). Returns what
    was forgotten (logged at WARNING); nothing when the directory is in use, new, or clean.
    """
    root = Path(data_dir)
    status = root / "status"
    data = root / "data"
    if not data.is_dir():
        return []
    lock_fd = None
    if status.exists():
        lock_fd = os.open(status, os.O_RDWR)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            log.info("chDB data dir %s is open elsewhere: deduplication logs not checked", root)
            return []
    forgotten = []
    try:
        seen: set[Path] = set()
        for database in sorted(p for p in data.iterdir() if p.is_dir()):
            for table in sorted(database.iterdir()):
                table_dir = table.resolve()
                if table_dir in seen or not table_dir.is_dir():
                    continue
                seen.add(table_dir)
                fixed = _repair_table(f"{database.name}.{table.name}", table_dir)
                if fixed is not None:
                    log.warning(
                        "%s: part %s of the last logged block(s) %s is not on disk (a crash "
                        "between logging them and committing it, or the part was dropped "
                        "since); forgetting them so that a replay stores them",
                        fixed.table,
                        fixed.part,
                        ", ".join(fixed.block_ids),
                    )
                    forgotten.append(fixed)
    finally:
        if lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)
    return forgotten
