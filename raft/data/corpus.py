"""`raft prepare-corpus`: clean, split, tokenize and pack a pretraining corpus.

Pipeline (deterministic for a given input, seed and tokenizer):

1. **Read documents** from WikiExtractor folders (``<doc ...>`` ... ``</doc>`` blocks in files
   ``wiki_NN`` or ``wiki_NN.gz``), plain-text files (documents separated by blank lines, or
   one per line / per file), or a Hub dataset (``text`` column; streaming when
   ``--max-documents`` is given).  ``--max-documents N`` keeps the first N non-empty documents.
2. **Clean**: drop ``<doc>`` tags and the title line, keep every non-empty line as a
   paragraph (stripped), join paragraphs with newlines; empty documents are dropped.
3. **Split by document**: ``numpy.random.default_rng(seed).permutation(n_docs)``; the first
   ``ceil(validation_fraction * n_docs)`` documents (at least 1) are the validation split.
   Both splits keep the source order of their documents.
4. **Tokenizer**: a WordPiece vocab file (lower-cased, e.g. the BERT uncased vocab), or one
   trained on the *training split only* with the ``tokenizers`` library (``--vocab-size``).
   Default: ``<data-dir>/vocab/bert-base-uncased-vocab.txt``, else the Hub tokenizer
   ``google-bert/bert-base-uncased``.
5. **Pack** as in the paper: each split's documents are tokenized without special tokens,
   concatenated in order (no separator), cut into blocks of ``seq_len - 2`` tokens, and each
   block becomes ``[CLS] block [SEP]`` -- exactly ``seq_len`` ids, no padding; the last
   incomplete block of a split is dropped (counted as ``dropped_tokens``).

Output: ``OUT/train``, ``OUT/validation`` (``Dataset.save_to_disk``, column ``input_ids``,
int32, fixed length ``seq_len``), ``OUT/tokenizer`` (``BertTokenizerFast.save_pretrained``),
``OUT/stats.json`` (written last; its ``settings`` block is the `raft.settings.Corpus` given).

The flags are the fields of `raft.settings.Corpus` (the one home of their defaults) plus
``--output``, ``--data-dir`` and ``--num-proc``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from raft import settings
from raft.data import sources as src

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_DOC_OPEN = re.compile(r'^<doc\b(?P<attrs>[^>]*)>\s*$')
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


class CorpusError(ValueError):
    """The corpus is empty, corrupt, or too small for the requested split."""


# ----------------------------------------------------------------------------------------
# Reading and cleaning
# ----------------------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """Keep non-empty lines (paragraphs), stripped, joined by newlines; drop doc tags."""
    paras = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("<doc ") or line == "</doc>":
            continue
        paras.append(line)
    return "\n".join(paras)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def wikiextractor_files(path: str | os.PathLike) -> list[Path]:
    """The WikiExtractor output files under ``path`` (``wiki_*`` plain or .gz), sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(
            f"WikiExtractor folder {str(p)!r} not found; expected <path>/<AA,AB,...>/wiki_NN[.gz] "
            f"files of <doc id=.. url=.. title=..> ... </doc> blocks (default <data-dir>/"
            f"{src.WIKIEXTRACTOR_RELPATH.as_posix()})"
        )
    files = sorted(f for f in p.rglob("wiki_*") if f.is_file() and not f.name.startswith("."))
    if not files:
        raise FileNotFoundError(
            f"no WikiExtractor files (wiki_*, wiki_*.gz) under {str(p)!r}; expected "
            f"<path>/<AA,AB,...>/wiki_NN[.gz] files of <doc ...> ... </doc> blocks"
        )
    return files


def iter_wikiextractor_file(path: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Documents of one WikiExtractor file: {"id", "title", "text"} with the title line dropped."""
    path = Path(path)
    doc: dict[str, Any] | None = None
    lineno = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                s = line.rstrip("\n")
                if doc is None:
                    m = _DOC_OPEN.match(s)
                    if m:
                        attrs = dict(_ATTR.findall(m.group("attrs")))
                        doc = {"id": attrs.get("id", ""), "title": attrs.get("title", ""), "lines": [],
                               "seen_title": False}
                    elif s.strip():
                        raise CorpusError(f"{path}:{lineno}: text outside a <doc> block: {s[:80]!r}")
                    continue
                if s.strip() == "</doc>":
                    yield {"id": doc["id"], "title": doc["title"], "text": "\n".join(doc["lines"])}
                    doc = None
                    continue
                if _DOC_OPEN.match(s):
                    raise CorpusError(f"{path}:{lineno}: <doc> opened inside another <doc> (missing </doc>)")
                t = s.strip()
                if not t:
                    continue
                if not doc["seen_title"]:
                    doc["seen_title"] = True
                    if t == doc["title"].strip():  # WikiExtractor repeats the title as line 1
                        continue
                doc["lines"].append(t)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if doc is not None:
        raise CorpusError(f"{path}:{lineno}: file ends inside a <doc> block (missing </doc>)")


def text_files(path: str | os.PathLike) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"text corpus {str(p)!r} not found; expected a .txt[.gz] file or a folder of them")
    files = sorted(f for f in p.rglob("*") if f.is_file() and (f.name.endswith(".txt") or f.name.endswith(".txt.gz")))
    if not files:
        raise FileNotFoundError(f"no *.txt or *.txt.gz files under {str(p)!r}")
    return files


def iter_text_file(path: str | os.PathLike, unit: str = "blank-line") -> Iterator[dict[str, str]]:
    """Documents of a plain-text file.  ``unit``: "blank-line" (documents separated by blank
    lines, the BERT convention), "line" (one document a line) or "file" (the whole file)."""
    path = Path(path)
    try:
        with _open_text(path) as f:
            if unit == "file":
                yield {"id": path.name, "title": "", "text": clean_text(f.read())}
                return
            buf: list[str] = []
            k = 0
            for line in f:
                t = line.strip()
                if unit == "line":
                    if t:
                        yield {"id": f"{path.name}:{k}", "title": "", "text": t}
                        k += 1
                    continue
                if t:
                    buf.append(t)
                elif buf:
                    yield {"id": f"{path.name}:{k}", "title": "", "text": "\n".join(buf)}
                    buf, k = [], k + 1
            if buf:
                yield {"id": f"{path.name}:{k}", "title": "", "text": "\n".join(buf)}
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def _take_nonempty(docs: Iterable[dict[str, str]], max_documents: int | None) -> tuple[list[str], int]:
    texts: list[str] = []
    empty = 0
    for d in docs:
        if d["text"].strip():
            texts.append(d["text"])
            if max_documents is not None and len(texts) >= max_documents:
                break
        else:
            empty += 1
    return texts, empty


def _iter_files(files: list[Path], reader, desc: str):
    from tqdm.auto import tqdm

    for f in tqdm(files, desc=desc, unit="file"):
        yield from reader(f)


def _wikitext_documents(rows: Iterable[dict]) -> Iterator[dict[str, str]]:
    """WikiText rows are lines; articles start at top-level headings `` = Title = ``."""
    buf: list[str] = []
    k = 0
    for row in rows:
        line = row["text"]
        if _WIKITEXT_TITLE.match(line.rstrip("\n")):
            if buf:
                yield {"id": str(k), "title": "", "text": clean_text("\n".join(buf))}
                k += 1
            buf = []
            continue
        buf.append(line)
    if buf:
        yield {"id": str(k), "title": "", "text": clean_text("\n".join(buf))}


def _clean_batch(batch):
    return {"text": [clean_text(t) for t in batch["text"]]}


def _hub_documents(hub_dataset: str, hub_config: str | None, max_documents: int | None, why: str,
                   work: Path, num_proc: int | None):
    """Hub corpus -> (Dataset of cleaned non-empty documents, number of empty ones).

    Rows are documents (``text`` column), except WikiText, whose line rows are grouped into
    articles at top-level headings.  With ``max_documents`` the dataset is streamed and only
    the first documents are read; without, it is downloaded and processed on disk (Arrow
    cache files under the output's work folder), so a full Wikipedia dump fits."""
    from datasets import Dataset
    from tqdm.auto import tqdm

    streaming = max_documents is not None
    ds = src.load_hub_dataset(hub_dataset, hub_config, why=why, split="train", streaming=streaming)
    is_wikitext = "wikitext" in hub_dataset.lower()

    def rows():
        for row in ds:
            if "text" not in row:
                raise CorpusError(f"Hub dataset {hub_dataset} has no 'text' column (columns: {list(row)})")
            yield row

    if streaming or is_wikitext or not isinstance(ds, Dataset):
        if is_wikitext:
            docs = _wikitext_documents(rows())
        else:
            docs = ({"text": clean_text(r["text"])} for r in rows())
        texts, empty = _take_nonempty(tqdm(docs, desc=f"reading {hub_dataset}", unit="doc"), max_documents)
        return Dataset.from_dict({"text": texts}), empty
    if "text" not in ds.column_names:
        raise CorpusError(f"Hub dataset {hub_dataset} has no 'text' column (columns: {ds.column_names})")
    n_all = len(ds)
    cleaned = ds.select_columns(["text"]).map(
        _clean_batch, batched=True, num_proc=num_proc, cache_file_name=str(work / "clean.arrow"),
        desc="cleaning")
    docs = cleaned.filter(lambda b: [bool(t) for t in b["text"]], batched=True, num_proc=num_proc,
                          cache_file_name=str(work / "nonempty.arrow"), desc="dropping empty documents")
    docs = docs.flatten_indices(cache_file_name=str(work / "docs.arrow"))
    return docs, n_all - len(docs)


# ----------------------------------------------------------------------------------------
# Split, tokenizer, packing
# ----------------------------------------------------------------------------------------
def split_documents(n_docs: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted: ``default_rng(seed).permutation(n)``,
    the first ``ceil(fraction * n)`` (at least 1 when fraction > 0) go to validation."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    if n_docs < 1:
        raise CorpusError("empty corpus: no non-empty documents")
    k = math.ceil(validation_fraction * n_docs) if validation_fraction > 0 else 0
    if validation_fraction > 0 and k >= n_docs:
        raise CorpusError(
            f"corpus has {n_docs} document(s): too few to split off a validation fraction of "
            f"{validation_fraction} and keep training documents (use more documents)"
        )
    perm = np.random.default_rng(seed).permutation(n_docs)
    return np.sort(perm[k:]), np.sort(perm[:k])


def train_wordpiece(texts: Iterable[str], vocab_size: int, out_dir: Path, *, length: int | None = None,
                    min_frequency: int = 2) -> Path:
    """Train a lower-cased BERT WordPiece vocabulary; returns the path of ``vocab.txt``.

    Ids are assigned in a canonical order ([PAD] [UNK] [CLS] [SEP] [MASK], then word-initial
    tokens sorted, then ``##`` continuations sorted).  The token *set* can still differ
    slightly between runs on large corpora: the ``tokenizers`` trainer breaks ties between
    equally frequent merges in hash-map order.  The saved OUT/tokenizer is the reference."""
    from tokenizers.implementations import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer(lowercase=True, clean_text=True, handle_chinese_chars=True, strip_accents=None)
    show = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("1", "true", "yes")
    wp.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=1000,
                           special_tokens=SPECIAL_TOKENS, show_progress=show, wordpieces_prefix="##",
                           length=length)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The trainer numbers tokens in Rust hash-map order, so ids differ from run to run even
    # when the token set is the same; write a canonical order (specials, words, ##pieces).
    vocab = wp.get_vocab()
    rest = sorted((t for t in vocab if t not in SPECIAL_TOKENS), key=lambda t: (t.startswith("##"), t))
    path = out_dir / "vocab.txt"
    path.write_text("".join(t + "\n" for t in SPECIAL_TOKENS + rest), encoding="utf-8")
    return path


class _Packer:
    """Concatenate token blocks and write ``[CLS] + (seq_len-2) + [SEP]`` rows to an Arrow stream."""

    def __init__(self, path: Path, seq_len: int, cls_id: int, sep_id: int, rows_per_batch: int = 8192):
        import pyarrow as pa

        self.pa = pa
        self.path, self.seq_len, self.body = path, seq_len, seq_len - 2
        self.cls_id, self.sep_id = cls_id, sep_id
        self.schema = pa.schema([("input_ids", pa.list_(pa.int32(), seq_len))])
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)
        self.pending: list[np.ndarray] = []
        self.pending_len = 0
        self.rows_per_batch = rows_per_batch
        self.tokens = 0
        self.sequences = 0

    def add(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            return
        self.tokens += int(ids.size)
        self.pending.append(ids.astype(np.int32, copy=False))
        self.pending_len += int(ids.size)
        if self.pending_len >= self.body * self.rows_per_batch:
            self._flush()

    def _flush(self) -> None:
        n_rows = self.pending_len // self.body
        if n_rows == 0:
            return
        flat = np.concatenate(self.pending) if len(self.pending) > 1 else self.pending[0]
        used = n_rows * self.body
        block = flat[:used].reshape(n_rows, self.body)
        rest = flat[used:]
        rows = np.empty((n_rows, self.seq_len), dtype=np.int32)
        rows[:, 0] = self.cls_id
        rows[:, 1:-1] = block
        rows[:, -1] = self.sep_id
        arr = self.pa.FixedSizeListArray.from_arrays(self.pa.array(rows.ravel(), type=self.pa.int32()), self.seq_len)
        self.writer.write_batch(self.pa.record_batch([arr], schema=self.schema))
        self.sequences += n_rows
        self.pending = [rest.copy()] if rest.size else []
        self.pending_len = int(rest.size)

    def close(self) -> int:
        """Flush full rows; returns the number of dropped tail tokens."""
        self._flush()
        self.writer.close()
        self.sink.close()
        return self.pending_len


def _tokenize_batch(batch, tokenizer):
    """datasets.map function: texts -> token ids (no special tokens) and word counts."""
    texts = batch["text"]
    enc_fn = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    encs = enc_fn(texts, add_special_tokens=False)
    return {"ids": [np.asarray(e.ids, dtype=np.int32) for e in encs],
            "n_words": [len(t.split()) for t in texts]}


# ----------------------------------------------------------------------------------------
# The whole pipeline
# ----------------------------------------------------------------------------------------
def prepare_corpus(
    output: str | os.PathLike,
    corpus: settings.Corpus,
    data_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> dict[str, Any]:
    """Run the pipeline with the settings ``corpus``; returns the stats written to ``OUT/stats.json``.

    ``data_dir``: the local data root (default ``$RAFT_DATA_DIR``); ``num_proc``: tokenizer
    worker processes (default 1 process, all cores through the Rust threads)."""
    from datasets import disable_progress_bars

    t0 = time.time()
    _check_settings(corpus)
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes"):
        disable_progress_bars()
    out = Path(output)
    work = _fresh_output(out)
    root = src.resolve_data_dir(data_dir)
    nproc = num_proc if num_proc is not None else 1
    phase = _Phases()
    read, input_info = _resolve_source(corpus, root)  # 1-2. documents
    docs, empty, origin = _read_documents(read, input_info, work, nproc)
    phase("read")
    train_idx, val_idx = split_documents(len(docs), corpus.validation_fraction, corpus.seed)  # 3. split
    hf_tok, tok_info = _make_tokenizer(corpus, docs, train_idx, root, work)  # 4. tokenizer
    phase("tokenizer")
    tokenized = _tokenize(docs, hf_tok, work, nproc)  # 5. tokenize + pack
    phase("tokenize")
    n_docs = len(docs)
    del docs
    splits = _pack_splits(tokenized, n_docs, train_idx, val_idx, work, corpus.seq_len,
                          hf_tok.cls_token_id, hf_tok.sep_token_id)
    phase("pack")
    _save_outputs(out, work, hf_tok)
    del tokenized
    shutil.rmtree(work, ignore_errors=True)
    phase("save")
    stats = {
        "source": origin,
        "input": input_info,
        "tokenizer_kind": tok_info["kind"],
        "tokenizer": tok_info,
        "seq_len": corpus.seq_len,
        "packing": "documents concatenated without separators; [CLS] + seq_len-2 tokens + [SEP]; "
                   "no padding; incomplete tail dropped",
        "validation_fraction": corpus.validation_fraction,
        "seed": corpus.seed,
        "max_documents": corpus.max_documents,
        "empty_documents_dropped": empty,
        "train": splits["train"],
        "validation": splits["validation"],
        "num_proc": nproc,
        "wall_time_s": round(time.time() - t0, 1),
        "timings_s": phase.timings,
        "settings": _settings_record(corpus),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    log.info("corpus ready in %s: %s", out, json.dumps({k: stats[k] for k in ("train", "validation")}))
    return stats


class _Phases:
    """``phase(name)`` records the seconds since the previous call (or the start) as ``name``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.last = time.time()

    def __call__(self, name: str) -> None:
        now = time.time()
        self.timings[name] = round(now - self.last, 1)
        self.last = now


def _check_settings(corpus: settings.Corpus) -> None:
    """The checks that need no input data (before anything is read or removed)."""
    if corpus.seq_len < 3:
        raise ValueError(f"seq_len must be >= 3 ([CLS] + tokens + [SEP]), got {corpus.seq_len}")
    if corpus.max_documents is not None and corpus.max_documents < 1:
        raise ValueError(f"--max-documents must be >= 1, got {corpus.max_documents}")
    if corpus.vocab_file is not None and corpus.vocab_size is not None:
        raise ValueError("give either a vocab file or a vocab size, not both")


def _settings_record(corpus: settings.Corpus) -> dict[str, Any]:
    """``settings.as_record(corpus)`` for stats.json (paths given as ``Path`` written as strings)."""
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in settings.as_record(corpus).items()}


def _fresh_output(out: Path) -> Path:
    """Create ``out``, remove an earlier run's outputs; returns an empty work folder ``out/.work``."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    for stale in ("stats.json",):
        (out / stale).unlink(missing_ok=True)
    for stale in ("train", "validation", "tokenizer"):
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    return work


def _resolve_source(corpus: settings.Corpus, root: Path | None) -> tuple[settings.Corpus, dict[str, Any]]:
    """The settings of what is actually read, and the start of the stats' ``input`` block.

    ``wikiextractor`` without ``path`` reads ``<root>/corpus/wikipedia-en``, else falls back to
    the Hub (recorded).  For ``hub``, a missing config is filled in for Wikipedia only."""
    input_info: dict[str, Any] = {"kind": corpus.source}
    hub_dataset = corpus.hub_dataset or src.HUB_WIKIPEDIA
    if corpus.source == "hub":
        hub_config = corpus.hub_config
        if hub_config is None and hub_dataset == src.HUB_WIKIPEDIA:
            hub_config = src.HUB_WIKIPEDIA_CONFIG
        return settings.replace(corpus, hub_dataset=hub_dataset, hub_config=hub_config), input_info
    if corpus.source != "wikiextractor" or corpus.path is not None:
        return corpus, input_info
    default = root / src.WIKIEXTRACTOR_RELPATH if root is not None else None
    if default is not None and default.is_dir():
        return settings.replace(corpus, path=default), input_info
    why = (f"no WikiExtractor folder at {default}" if default is not None
           else f"no --path and no local data root (--data-dir / ${src.ENV_VAR})")
    hub_config = corpus.hub_config or src.HUB_WIKIPEDIA_CONFIG
    log.warning("%s; falling back to the Hub: %s %s", why, hub_dataset, hub_config)
    input_info["fallback"] = f"{why}; used Hub {hub_dataset} ({hub_config})"
    return settings.replace(corpus, source="hub", hub_dataset=hub_dataset, hub_config=hub_config), input_info


def _read_documents(read: settings.Corpus, input_info: dict[str, Any], work: Path,
                    nproc: int) -> tuple[Any, int, str]:
    """Steps 1-2: (Dataset of cleaned non-empty documents, number of empty ones, source label);
    adds what was read to ``input_info``."""
    if read.source == "wikiextractor":
        files = wikiextractor_files(read.path)
        docs, empty = _local_documents(files, iter_wikiextractor_file, "reading WikiExtractor", read.max_documents)
        input_info.update(path=str(Path(read.path).resolve()), files=len(files))
        origin = src.LOCAL
    elif read.source == "text":
        if read.path is None:
            raise ValueError("--source text needs --path (a .txt[.gz] file or a folder of them)")
        if read.text_unit not in ("blank-line", "line", "file"):
            raise ValueError(f"text unit must be blank-line, line or file, got {read.text_unit!r}")
        files = text_files(read.path)
        docs, empty = _local_documents(files, lambda f: iter_text_file(f, read.text_unit), "reading text",
                                       read.max_documents)
        input_info.update(path=str(Path(read.path).resolve()), files=len(files), text_unit=read.text_unit)
        origin = src.LOCAL
    elif read.source == "hub":
        why = input_info.get("fallback", "--source hub")
        docs, empty = _hub_documents(read.hub_dataset, read.hub_config, read.max_documents, why, work,
                                     nproc if nproc > 1 else None)
        input_info.update(hub_dataset=read.hub_dataset, hub_config=read.hub_config,
                          streaming=read.max_documents is not None)
        origin = src.HUB
    else:
        raise ValueError(f"unknown corpus source {read.source!r}; known: wikiextractor, text, hub")
    if len(docs) == 0:
        where = input_info.get("path") or input_info.get("hub_dataset")
        raise CorpusError(f"empty corpus: no non-empty documents in {where} ({empty} empty ones)")
    log.info("%d documents (%d empty dropped)", len(docs), empty)
    return docs, empty, origin


def _local_documents(files: list[Path], reader, desc: str, max_documents: int | None):
    """Local files -> (Dataset of cleaned non-empty documents, number of empty ones)."""
    from datasets import Dataset

    texts, empty = _take_nonempty(_iter_files(files, reader, desc), max_documents)
    return Dataset.from_dict({"text": texts}), empty


def _make_tokenizer(corpus: settings.Corpus, docs, train_idx: np.ndarray, root: Path | None, work: Path):
    """Step 4: (the BERT fast tokenizer, its stats block)."""
    tok_info: dict[str, Any] = {"lowercase": True}
    if corpus.vocab_size is not None:
        train_texts = docs.select(train_idx)
        vocab_path = train_wordpiece(
            (b["text"] for b in train_texts.iter(batch_size=256)), corpus.vocab_size, work / "wordpiece",
            length=len(train_texts))
        hf_tok = src.bert_tokenizer_from_vocab(vocab_path)
        tok_info.update(kind="trained", requested_vocab_size=corpus.vocab_size, trained_on="train split")
    else:
        vocab_file = corpus.vocab_file if corpus.vocab_file is not None else src.default_vocab_file(root)
        if vocab_file is not None:
            hf_tok = src.bert_tokenizer_from_vocab(vocab_file)
            tok_info.update(kind="vocab-file", vocab_file=str(Path(vocab_file).resolve()))
        else:
            hf_tok = src.load_hub_tokenizer(why="no --vocab-file / --vocab-size and no <data-dir>/vocab")
            tok_info.update(kind="hub", hub_id=src.HUB_TOKENIZER)
    tok_info["vocab_size"] = len(hf_tok)
    if hf_tok.cls_token_id is None or hf_tok.sep_token_id is None:
        raise ValueError("the tokenizer has no [CLS] / [SEP] token")
    return hf_tok, tok_info


def _tokenize(docs, hf_tok, work: Path, nproc: int):
    """Step 5a: documents -> token ids without special tokens (``ids``) and word counts."""
    backend = hf_tok.backend_tokenizer
    saved_env = os.environ.get("TOKENIZERS_PARALLELISM")
    if nproc > 1:  # one Rust thread per worker process (and no fork warning)
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return docs.map(
            _tokenize_batch, batched=True, batch_size=64, fn_kwargs={"tokenizer": backend},
            remove_columns=["text"], num_proc=nproc if nproc > 1 else None,
            cache_file_name=str(work / "tokenized.arrow"), desc="tokenizing",
        )
    finally:
        if nproc > 1:
            if saved_env is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved_env


def _pack_splits(tokenized, n_docs: int, train_idx: np.ndarray, val_idx: np.ndarray, work: Path,
                 seq_len: int, cls_id: int, sep_id: int) -> dict[str, dict[str, int]]:
    """Step 5b: pack each split's token stream into ``work/<split>.arrow``; returns the split stats."""
    from tqdm.auto import tqdm

    is_val = np.zeros(n_docs, dtype=bool)
    is_val[val_idx] = True
    packers = {"train": _Packer(work / "train.arrow", seq_len, cls_id, sep_id),
               "validation": _Packer(work / "validation.arrow", seq_len, cls_id, sep_id)}
    words = {"train": 0, "validation": 0}
    table = tokenized.data.table if hasattr(tokenized.data, "table") else tokenized.data
    pos = 0
    for batch in tqdm(table.to_batches(max_chunksize=2048), desc="packing", unit="batch"):
        ids_col = batch.column("ids")
        nw = batch.column("n_words").to_numpy()
        offsets = ids_col.offsets.to_numpy()
        offsets = offsets - offsets[0]
        flat = ids_col.flatten().to_numpy(zero_copy_only=False)
        lens = np.diff(offsets)
        val_mask_docs = is_val[pos: pos + len(batch)]
        pos += len(batch)
        for split, mask_docs in (("train", ~val_mask_docs), ("validation", val_mask_docs)):
            if not mask_docs.any():
                continue
            words[split] += int(nw[mask_docs].sum())
            packers[split].add(flat[np.repeat(mask_docs, lens)])
    if pos != len(is_val):
        raise RuntimeError(f"internal error: packed {pos} documents of {len(is_val)}")
    return _close_packers(packers, words, {"train": train_idx, "validation": val_idx}, seq_len)


def _close_packers(packers: dict[str, _Packer], words: dict[str, int], indices: dict[str, np.ndarray],
                   seq_len: int) -> dict[str, dict[str, int]]:
    """Close both packers (in order train, validation); a split without one sequence is an error."""
    stats_splits: dict[str, dict[str, int]] = {}
    for split in ("train", "validation"):
        p, idx = packers[split], indices[split]
        dropped = p.close()
        stats_splits[split] = {"documents": int(len(idx)), "words": words[split], "tokens": p.tokens,
                               "sequences": p.sequences, "dropped_tokens": dropped}
        if p.sequences == 0 and (split == "train" or len(idx) > 0):
            raise CorpusError(
                f"the {split} split has {p.tokens} tokens in {len(idx)} document(s): fewer than one "
                f"sequence of {seq_len - 2} tokens; use more documents (--max-documents) or a larger "
                f"--validation-fraction"
            )
    return stats_splits


def _save_outputs(out: Path, work: Path, hf_tok) -> None:
    """``OUT/train``, ``OUT/validation`` (from the packed Arrow streams) and ``OUT/tokenizer``."""
    from datasets import Dataset

    for split in ("train", "validation"):
        ds = Dataset.from_file(str(work / f"{split}.arrow"))
        ds.save_to_disk(str(out / split))
        del ds
    hf_tok.save_pretrained(str(out / "tokenizer"))


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own flags, then one flag per field of `raft.settings.Corpus`."""
    parser.add_argument("--output", required=True, help="output folder (train/, validation/, tokenizer/, stats.json)")
    parser.add_argument("--data-dir", default=None, help=f"local data root (default: ${src.ENV_VAR})")
    parser.add_argument("--num-proc", type=int, default=None,
                        help="tokenizer worker processes (default 1 process using all cores via Rust threads)")
    settings.add_flags(parser, settings.Corpus)


def main(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
    try:
        stats = prepare_corpus(args.output, settings.from_args(settings.Corpus, args),
                               data_dir=args.data_dir, num_proc=args.num_proc)
    except (CorpusError, FileNotFoundError, ValueError, src.DataSourceError) as exc:
        print(f"raft prepare-corpus: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: stats[k] for k in ("source", "tokenizer_kind", "seq_len", "train", "validation",
                                            "wall_time_s")}, indent=2))
    return 0
