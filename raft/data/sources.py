"""Where data comes from: a local data root or the Hugging Face Hub.

A *local data root* is a folder laid out like the project's shared data copy::

    <root>/glue/<Task>/{train,dev}.tsv ...     (GLUE-style TSV folders)
    <root>/squad/v1.1/dev-v1.1.json            (official SQuAD JSON)
    <root>/corpus/wikipedia-en/<AA..>/wiki_NN[.gz]   (WikiExtractor output)
    <root>/vocab/bert-base-uncased-vocab.txt   (BERT uncased WordPiece vocabulary)

It is given explicitly (config / ``--data-dir``) or by the ``RAFT_DATA_DIR`` environment
variable.  When a data set is absent from the root (or no root is set) the loaders fall back
to the Hub ids below.  Every loader records which source it used ("local", "local-subset",
"hub", "held-out") so that every result can carry that label; nothing falls back silently.
A root that is *given but does not exist* is an error, never a reason to use the Hub.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "RAFT_DATA_DIR"

# Hub ids (datasets and tokenizer) used when the local root lacks a data set.
HUB_GLUE = "nyu-mll/glue"
HUB_SQUAD = "rajpurkar/squad"
HUB_WIKIPEDIA = "wikimedia/wikipedia"
HUB_WIKIPEDIA_CONFIG = "20231101.en"
HUB_WIKITEXT = "Salesforce/wikitext"
HUB_WIKITEXT_CONFIG = "wikitext-103-raw-v1"
HUB_BOOKCORPUS = "bookcorpus/bookcorpus"
HUB_TOKENIZER = "google-bert/bert-base-uncased"

# Source labels written into every output's metadata.
LOCAL = "local"  # a complete official split read from the local root
LOCAL_SUBSET = "local-subset"  # a local sample of an official split (not the whole split)
HUB = "hub"  # downloaded from the Hugging Face Hub
HELD_OUT = "held-out"  # an evaluation set carved out of other local data (no official file)

# Relative paths inside a local root.
VOCAB_RELPATH = Path("vocab") / "bert-base-uncased-vocab.txt"
WIKIEXTRACTOR_RELPATH = Path("corpus") / "wikipedia-en"


class DataSourceError(RuntimeError):
    """A data set could be found neither locally nor on the Hub, or a local copy is broken."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data root: ``data_dir`` if given, else ``$RAFT_DATA_DIR``, else ``None``.

    A root that is given (argument or environment) but does not exist raises
    ``FileNotFoundError``: a typo must not turn into a silent download.
    """
    if data_dir is not None and str(data_dir) != "":
        root, origin = Path(data_dir).expanduser(), "data_dir argument"
    else:
        env = os.environ.get(ENV_VAR, "")
        if not env:
            return None
        root, origin = Path(env).expanduser(), f"${ENV_VAR}"
    if not root.is_dir():
        raise FileNotFoundError(
            f"local data root {str(root)!r} (from {origin}) does not exist or is not a folder; "
            "expected a folder with glue/, squad/, corpus/, vocab/ subfolders "
            f"(unset {ENV_VAR} / omit --data-dir to use the Hugging Face Hub instead)"
        )
    return root.resolve()


def local_path(data_dir: str | os.PathLike | None, *parts: str | os.PathLike) -> Path | None:
    """``<root>/<parts...>`` if a root is set (it may not exist), else ``None``."""
    root = resolve_data_dir(data_dir)
    return None if root is None else root.joinpath(*map(str, parts))


def default_vocab_file(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``<root>/vocab/bert-base-uncased-vocab.txt`` when it exists, else ``None``."""
    p = local_path(data_dir, VOCAB_RELPATH)
    return p if p is not None and p.is_file() else None


def hub_offline() -> bool:
    """True when the Hub is disabled by ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when the Hub is disabled (`hub_offline`) or its host does not answer a TCP connect."""
    import socket
    from urllib.parse import urlparse

    if hub_offline():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def load_hub_dataset(path: str, name: str | None = None, *, why: str = "", **kwargs: Any):
    """``datasets.load_dataset(path, name, **kwargs)`` with a clear error when it fails.

    ``why`` says why the Hub is used (e.g. which local path was missing); it is logged and
    repeated in the error message.  ``datasets.load_dataset`` is looked up at call time, so
    tests can monkeypatch it.
    """
    import datasets

    what = f"{path}" + (f" (config {name})" if name else "")
    log.info("loading %s from the Hugging Face Hub%s", what, f": {why}" if why else "")
    try:
        if name is None:
            return datasets.load_dataset(path, **kwargs)
        return datasets.load_dataset(path, name, **kwargs)
    except Exception as exc:  # network, auth, offline mode, unknown config ...
        hint = " (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if hub_offline() else ""
        raise DataSourceError(
            f"could not load {what} from the Hugging Face Hub{hint}: {type(exc).__name__}: {exc}"
            + (f"\nThe Hub was used because {why}." if why else "")
            + f"\nProvide a local copy instead (--data-dir or ${ENV_VAR})."
        ) from exc


def load_hub_tokenizer(model_id: str = HUB_TOKENIZER, *, why: str = ""):
    """``AutoTokenizer.from_pretrained(model_id)`` with a clear error when it fails."""
    from transformers import AutoTokenizer

    log.info("loading tokenizer %s from the Hugging Face Hub%s", model_id, f": {why}" if why else "")
    try:
        return AutoTokenizer.from_pretrained(model_id)
    except Exception as exc:
        raise DataSourceError(
            f"could not load tokenizer {model_id} from the Hugging Face Hub: {type(exc).__name__}: {exc}"
            + (f"\nThe Hub was used because {why}." if why else "")
            + f"\nGive a vocabulary file instead (--vocab-file, or <data-dir>/{VOCAB_RELPATH.as_posix()})."
        ) from exc


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """A WordPiece ``vocab.txt`` (one token a line) as ``{token: id}``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"vocabulary file {str(p)!r} not found; expected a WordPiece vocab.txt "
            f"(one token per line, e.g. <data-dir>/{VOCAB_RELPATH.as_posix()})"
        )
    vocab: dict[str, int] = {}
    with p.open(encoding="utf-8") as f:
        for line in f:
            tok = line.rstrip("\n").rstrip("\r")
            if tok and tok not in vocab:
                vocab[tok] = len(vocab)
    if not vocab:
        raise ValueError(f"vocabulary file {str(p)!r} is empty")
    return vocab


def bert_tokenizer_from_vocab(path: str | os.PathLike, *, lowercase: bool = True, model_max_length: int = 512):
    """A ``BertTokenizerFast`` built offline from a WordPiece ``vocab.txt``.

    Works with transformers 4.x (``vocab_file=``) and 5.x (``vocab=`` dict).
    """
    import inspect

    from transformers import BertTokenizerFast

    vocab = read_vocab(path)
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t not in vocab]
    if missing:
        raise ValueError(f"vocabulary {str(path)!r} lacks the special token(s) {' '.join(missing)}")
    params = inspect.signature(BertTokenizerFast.__init__).parameters
    if "vocab" in params and "vocab_file" not in params:  # transformers >= 5
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=lowercase, model_max_length=model_max_length)
    else:  # transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(path), do_lower_case=lowercase, model_max_length=model_max_length)
    return tok


class SplitMetadata:
    """`sizes` and `metadata()` for a protocol split with fields pool, dev, tests, sources,
    partial_data, data_notes and selection_metric (GlueData, SquadData)."""

    @property
    def sizes(self) -> dict:
        return {"pool": len(self.pool), "dev_part": len(self.dev), "test": {k: len(v) for k, v in self.tests.items()}}

    def metadata(self) -> dict:
        """The fields every result file carries about its data."""
        return {
            "sources": dict(self.sources),
            "partial_data": self.partial_data,
            "data_notes": list(self.data_notes),
            "sizes": self.sizes,
            "selection_metric": self.selection_metric,
        }
