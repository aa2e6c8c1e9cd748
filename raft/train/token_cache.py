"""Tokenized data, once: parts of a task's data encoded once per process and once per study.

A fine-tuning process keeps every encoded part it made in memory (the batched runs of one
task and variant share them), and -- given a folder (``--cache-dir``; the workflow passes
``results/cache/tokenized``) -- the tokenized Arrow table of each part is kept there by the
datasets library (``Dataset.map(cache_file_name=...)``), so the next process of the same task
loads it instead of tokenizing again: a test set of 20,000 MNLI pairs is tokenized once per
study, not once per job.

A part is known by its key: the task, the part's name, its size and the SHA-1 of its example
ids in order, where the data came from, the content of the task's loaded data
(`raft.fingerprint.dataset_sha1`: an edited data file is tokenized again), the tokenizer (SHA-1
of its serialised fast-tokenizer JSON) and the encoding settings (sequence length; SQuAD's
window). Change any of them and the key changes. Every lookup is counted (``hits`` /
``misses``) and noted per run (`take_events`, recorded in metrics.json as ``tokenized_cache``),
and logged as ``tokenized-data cache hit: ...``. A file on disk that fails to load (cut off by a
full disk or a killed job) is moved aside (``*.arrow.corrupt``) with a log line naming it, and
the part is tokenized again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft.fingerprint import move_aside

log = logging.getLogger("raft.token_cache")

VERSION = 1  # bump when an encoding changes in a way the key does not see


def ids_sha1(ids) -> str:
    """SHA-1 of a sequence of example ids (ints or strings), order included."""
    h = hashlib.sha1()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def tokenizer_sha1(tokenizer) -> str:
    """SHA-1 of a fast tokenizer's serialised form (vocabulary, normaliser, truncation rules)."""
    return hashlib.sha1(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


class TokenCache:
    """Encoded parts by key: in memory for this process, as Arrow files in ``directory`` for the next."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory else None
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, Any] = {}
        self._events: list[dict] = []
        self._tokenizers: dict[int, str] = {}

    def tokenizer_id(self, tokenizer) -> str:
        key = id(tokenizer)
        if key not in self._tokenizers:
            self._tokenizers[key] = tokenizer_sha1(tokenizer)
        return self._tokenizers[key]

    def get(self, name: str, key: dict, build: Callable[[str | None], Any]) -> Any:
        """The part ``name`` with ``key``: from memory, else ``build(cache_file_name)`` (the
        Arrow file to hand to ``Dataset.map``; None without a folder), which loads the file
        when an earlier process wrote it."""
        digest = hashlib.sha1(json.dumps({**key, "version": VERSION}, sort_keys=True, default=str).encode())
        digest = digest.hexdigest()[:20]
        if digest in self._memory:
            return self._found(name, "memory", digest, self._memory[digest])
        path = None if self.directory is None else self.directory / f"{name}-{digest}.arrow"
        on_disk = path is not None and path.is_file()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        if on_disk:
            try:
                value = build(str(path))
            except Exception as exc:  # a cut-off / damaged Arrow file: pyarrow's errors vary
                aside = move_aside(path)
                log.warning("tokenized-data cache file %s cannot be loaded (%s: %s); moved aside to %s, "
                            "tokenizing again", path, type(exc).__name__, exc, aside.name)
                on_disk = False
        if not on_disk:
            value = build(None if path is None else str(path))
        self._memory[digest] = value
        if on_disk:
            return self._found(name, "disk", digest, value)
        self.misses += 1
        self._events.append({"part": name, "from": "tokenized"})
        return value

    def _found(self, name: str, where: str, digest: str, value):
        self.hits += 1
        self._events.append({"part": name, "from": where})
        log.info("tokenized-data cache hit: %s (%s, key %s)", name, where, digest)
        return value

    def take_events(self) -> dict[str, list[str]]:
        """{"memory"|"disk"|"tokenized": [part names]} since the last call (one run's lookups)."""
        out: dict[str, list[str]] = {}
        for event in self._events:
            out.setdefault(event["from"], []).append(event["part"])
        self._events = []
        return out
