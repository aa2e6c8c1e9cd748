"""Fingerprints that decide whether a stored result may stand in for a new computation.

- `code_sha1`: the source of the installed ``raft`` package (every ``.py``, ``.cpp`` and
  ``.json`` file under it, by relative path and content). Part of a fine-tuning run's request
  (`raft.train.finetune_setup.request_sha1`): a run recorded by other code is computed again.
  Chosen over a declared results-format version because a fix to the code that computes the
  numbers (a metric, a split) changes no format, and nothing can make a developer remember to
  bump a number; its cost is that a retry after an unrelated edit recomputes the runs it could
  have restored.
- `dataset_sha1`: the content of loaded data sets (rows in order, every column): part of a
  run's request and of the tokenized-data cache key, so data edited in place is read again.
- `record_sha1`: the checksum a run record carries (``record_sha1``); a stored copy whose
  checksum does not match was changed or damaged after it was written and is not restored.
- `move_aside`: where a stored file that cannot be trusted goes (kept for a look, never read).

No torch here: the analysis side may import it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

CHECKSUM_KEY = "record_sha1"
SOURCE_SUFFIXES = (".py", ".cpp", ".json")


@functools.lru_cache(maxsize=None)
def code_sha1(root: str | None = None) -> str:
    """SHA-1 of the package source under ``root`` (default: the installed ``raft``), cached."""
    base = Path(root) if root else Path(__file__).resolve().parent
    h = hashlib.sha1()
    for path in sorted(p for p in base.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()
                       and "__pycache__" not in p.parts):
        h.update(path.relative_to(base).as_posix().encode() + b"\0")
        h.update(hashlib.sha1(path.read_bytes()).digest())
    return h.hexdigest()


def dataset_sha1(*datasets) -> str:
    """SHA-1 of the rows of Hugging Face ``datasets`` (in order, indices mapping applied),
    written as Arrow IPC streams one after the other."""
    import pyarrow as pa

    h = hashlib.sha1()
    for ds in datasets:
        table = ds.with_format("arrow")[:]
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        h.update(sink.getvalue())
    return h.hexdigest()


def _plain(obj):
    """JSON for what `json` cannot write itself (numpy scalars and arrays, paths)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def record_sha1(record: dict) -> str:
    """The checksum of a record as JSON reads it back (the ``record_sha1`` field left out)."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    plain = json.loads(json.dumps(body, default=_plain, allow_nan=True))
    return hashlib.sha1(json.dumps(plain, sort_keys=True, allow_nan=True).encode()).hexdigest()


def with_checksum(record: dict) -> dict:
    """``record`` with its ``record_sha1`` as the last field."""
    return {**{k: v for k, v in record.items() if k != CHECKSUM_KEY}, CHECKSUM_KEY: record_sha1(record)}


def checksum_ok(record: dict) -> bool:
    """True when ``record`` carries a ``record_sha1`` that matches its content."""
    return record.get(CHECKSUM_KEY) == record_sha1(record)


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.corrupt`` (``.corrupt.1``, ... when taken): kept, never read again."""
    target, k = path.with_name(path.name + ".corrupt"), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt.{k}")
    path.replace(target)
    return target
