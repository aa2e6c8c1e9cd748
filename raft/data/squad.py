"""SQuAD v1.1: readers (Hub or official JSON), the paper's split protocol, features, EM/F1.

Examples are flat, in the Hub's ``squad`` format::

    id, title, context, question, answers {"text": [str, ...], "answer_start": [int, ...]}

Protocol (same shape as GLUE, see ``raft.data.glue``):

* **With the official train set** (Hub ``rajpurkar/squad``, or a local
  ``<root>/squad/v1.1/train-v1.1.json``): official train -> ``default_rng(96).permutation``,
  first ``int(0.75 n)`` = train pool, rest = dev part; official dev (10,570) = test.
* **Offline, dev only** (the shared local copy has only ``dev-v1.1.json``): the 48 dev
  articles are split *by article* -- ``default_rng(96).permutation(n_articles)``, the first
  ``round(OFFLINE_TEST_FRACTION * n_articles)`` articles (24 of 48; 5,676 questions) are the
  test part, the other articles (4,894 questions) the training side -- and the training side is
  split into pool / dev part exactly like an official train set (seed 96, 75 / 25:
  3,670 / 1,224).  The result is labelled ``sources = {"train": "local-subset", "test":
  "held-out"}``, ``partial_data = True`` and explained in ``data_notes``.
* **Low data**: ``sample(data, n, seed)`` (``raft.data.split``, as for GLUE): n questions from the pool and n
  from the dev part (the whole dev part when n >= its size).
* **Sizes without loading**: ``split_sizes(data_dir)`` gives the pool / dev part sizes from the
  local JSON (or the official size for the Hub), without ``datasets``.

Features follow the Hugging Face ``run_qa.py`` example: question + context pairs truncated
``only_second`` with overlapping windows (``doc_stride`` = the number of tokens two windows of
one context share, the tokenizer's ``stride``), offset mappings kept for answer extraction,
questions cut to ``max_query_length`` tokens first (as in the original BERT code).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raft.checks import check_squad_window
from raft.data import sources as src
from raft.data.split import POOL_FRACTION, POOL_SEED, pool_rows, sample, split_pool_dev
from raft.data.metrics import normalize_answer, squad_metrics

log = logging.getLogger(__name__)

__all__ = [
    "SquadData",
    "load_squad",
    "read_squad_json",
    "split_by_article",
    "offline_test_titles",
    "split_sizes",
    "sample",
    "prepare_train_features",
    "prepare_eval_features",
    "tokenize_train",
    "tokenize_eval",
    "postprocess_predictions",
    "squad_metrics",
    "normalize_answer",
    "references",
    "OFFLINE_TEST_FRACTION",
]

OFFLINE_TEST_FRACTION = 0.5  # share of dev *articles* held out as the offline test part
LOCAL_RELDIR = Path("squad") / "v1.1"
OFFICIAL_SIZES = {"train": 87599, "test": 10570}


def _features():
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
    })


def _nearest_occurrence(context: str, text: str, start: int) -> int | None:
    """Start of the occurrence of ``text`` in ``context`` nearest to ``start`` (the earlier one
    on a tie); None when ``text`` does not occur."""
    best = None
    i = context.find(text)
    while i != -1:
        if best is None or abs(i - start) < abs(best - start):
            best = i
        i = context.find(text, i + 1)
    return best


def _load_articles(path: Path) -> list:
    """The ``data`` list of articles of the official SQuAD JSON at ``path``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"SQuAD file {str(path)!r} not found; expected the official JSON at "
            f"<data-dir>/{LOCAL_RELDIR.as_posix()}/dev-v1.1.json (and optionally train-v1.1.json)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        articles = raw["data"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not an official SQuAD JSON file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(articles, list):
        raise ValueError(f"{path}: not an official SQuAD JSON file ('data' is not a list of articles)")
    return articles


def _bad(path: Path, where: str, what: str) -> ValueError:
    return ValueError(f"{path}: {where}: {what}")


def _paragraphs(path: Path, articles: list):
    """Yield ``(where, title, context, qas)`` for every paragraph, checking its shape."""
    for a, article in enumerate(articles):
        where = f"data[{a}]"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise _bad(path, where, "article without a 'paragraphs' list")
        title = article.get("title", "")
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise _bad(path, where, "paragraph is not a JSON object")
            context, qas = paragraph.get("context"), paragraph.get("qas")
            if not isinstance(context, str):
                raise _bad(path, where, "paragraph without a 'context' string")
            if not isinstance(qas, list):
                raise _bad(path, where, "paragraph without a 'qas' list")
            yield where, title, context, qas


def _check_question(path: Path, where: str, qa) -> tuple[Any, str, str, list]:
    """``(id, where, question, answers)`` of one question entry; ``where`` then names its id."""
    if not isinstance(qa, dict):
        raise _bad(path, where, "question entry is not a JSON object")
    if "id" not in qa:
        raise _bad(path, where, "question entry without an 'id'")
    qid = qa["id"]
    where = f"question id {qid!r} ({where})"
    question = qa.get("question")
    if not isinstance(question, str):
        raise _bad(path, where, "no 'question' text" if question is None else "'question' is not a string")
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        raise _bad(path, where, "'answers' is not a list")
    return qid, where, question, answers


def _fix_offset(path: Path, where: str, k: int, context: str, text: str, start: int) -> int:
    """``start`` when it points at ``text`` in ``context``, else the nearest occurrence of ``text``."""
    if 0 <= start <= len(context) - len(text) and context[start:start + len(text)] == text:
        return start
    found = _nearest_occurrence(context, text, start)
    if found is None:
        raise _bad(path, where, f"answer {k} text {text!r} does not occur in its context "
                                f"(answer_start {start})")
    return found


def _flatten_answers(path: Path, where: str, qid, context: str, answers: list,
                     fixed: list[tuple[str, int, int]]) -> dict[str, list]:
    """``{"text": [...], "answer_start": [...]}`` of one question, offsets repaired (noted in ``fixed``)."""
    texts, starts = [], []
    for k, x in enumerate(answers):
        text = x.get("text") if isinstance(x, dict) else None
        given = x.get("answer_start") if isinstance(x, dict) else None
        if not isinstance(text, str):
            raise _bad(path, where, f"answer {k} without a 'text' string")
        try:
            start = int(given)
        except (TypeError, ValueError):
            raise _bad(path, where, f"answer {k}: 'answer_start' {given!r} is not an integer") from None
        found = _fix_offset(path, where, k, context, text, start)
        if found != start:
            fixed.append((str(qid), start, found))
        texts.append(text)
        starts.append(found)
    return {"text": texts, "answer_start": starts}


def _flatten_qa(path: Path, articles: list) -> tuple[dict[str, list], list[tuple[str, int, int]]]:
    """Columns (id, title, context, question, answers) and the repaired offsets
    ``(question id, given start, corrected start)``."""
    cols: dict[str, list] = {k: [] for k in ("id", "title", "context", "question", "answers")}
    fixed: list[tuple[str, int, int]] = []
    for where, title, context, qas in _paragraphs(path, articles):
        for q, qa in enumerate(qas):
            qid, qwhere, question, answers = _check_question(path, f"{where}.qas[{q}]", qa)
            flat = _flatten_answers(path, qwhere, qid, context, answers, fixed)
            cols["id"].append(qid)
            cols["title"].append(title)
            cols["context"].append(context)
            cols["question"].append(question)
            cols["answers"].append(flat)
    return cols, fixed


def _check_ids(path: Path, ids: list) -> None:
    if not ids:
        raise ValueError(f"{path}: no questions")
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in collections.Counter(ids).items() if n > 1)
        raise ValueError(f"{path}: duplicate question ids (e.g. {dup!r})")


def _report_fixes(path: Path, cols: dict[str, list], fixed: list[tuple[str, int, int]],
                  notes: list[str] | None) -> None:
    """Warn about repaired answer offsets (and add a note to ``notes`` when given)."""
    if not fixed:
        return
    qid, given, found = fixed[0]
    n_answers = sum(len(a["text"]) for a in cols["answers"])
    log.warning(
        "%s: %d of %d answer offsets did not point at the answer text; moved to the nearest "
        "occurrence of the text in the context (e.g. question id %r: answer_start %d -> %d)",
        path, len(fixed), n_answers, qid, given, found,
    )
    if notes is not None:
        notes.append(
            f"SQuAD: {len(fixed):,} of {n_answers:,} answers in {path.name} had an answer_start that did "
            f"not point at the answer text; each was moved to the nearest occurrence of the text in "
            f"its context."
        )


def read_squad_json(path: str | os.PathLike, notes: list[str] | None = None) -> dict[str, list]:
    """Flatten an official SQuAD v1.1 JSON file into columns (id, title, context, question, answers).

    A malformed entry (missing ``paragraphs`` / ``context`` / ``qas`` / ``id`` / ``question``,
    a bad answer) raises ``ValueError`` naming the file and the question id (or the entry's
    position).  An answer whose ``answer_start`` does not point at its text is moved to the
    occurrence of the text in the context nearest to the given start (counted in a warning and,
    when ``notes`` is given, in a note appended to it); an answer text that does not occur in
    its context at all raises ``ValueError``.
    """
    path = Path(path)
    cols, fixed = _flatten_qa(path, _load_articles(path))
    _check_ids(path, cols["id"])
    _report_fixes(path, cols, fixed, notes)
    return cols


def _dataset(cols: dict[str, list]):
    from datasets import Dataset

    return Dataset.from_dict(cols, features=_features())


def offline_test_titles(titles: list[str], test_fraction: float = OFFLINE_TEST_FRACTION,
                        seed: int = POOL_SEED) -> set[str]:
    """The articles of the offline test part: the distinct ``titles`` (in order of first
    appearance) permuted with ``default_rng(seed)``, the first ``round(test_fraction * n_articles)``
    (at least 1, at most all but one)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    articles = list(dict.fromkeys(titles))
    if len(articles) < 2:
        raise ValueError("cannot split fewer than 2 articles")
    perm = np.random.default_rng(seed).permutation(len(articles))
    k = min(max(1, round(test_fraction * len(articles))), len(articles) - 1)
    return {articles[i] for i in perm[:k]}


def split_by_article(dataset, test_fraction: float = OFFLINE_TEST_FRACTION, seed: int = POOL_SEED):
    """(train_side, test): the rows of the ``offline_test_titles`` articles -> test part, the
    rest -> training side.  Row order inside each part is the file order."""
    titles = list(dataset["title"])
    test_titles = offline_test_titles(titles, test_fraction, seed)
    test_idx = [i for i, t in enumerate(titles) if t in test_titles]
    train_idx = [i for i, t in enumerate(titles) if t not in test_titles]
    return dataset.select(train_idx), dataset.select(test_idx)


@dataclass
class SquadData(src.SplitMetadata):
    """SQuAD split as in the paper; ``tests`` = {"test": Dataset}."""

    pool: Any
    dev: Any
    tests: dict[str, Any]
    sources: dict[str, str]
    partial_data: bool
    data_notes: list[str]
    task: str = "squad"
    shuffle_seed: int = POOL_SEED
    pool_fraction: float = POOL_FRACTION
    selection_metric: str = "f1"
    split_info: dict[str, Any] = field(default_factory=dict)


def load_squad(data_dir: str | os.PathLike | None = None,
               offline_test_fraction: float = OFFLINE_TEST_FRACTION) -> SquadData:
    """Load SQuAD v1.1 and split it as in the paper (see the module docstring).

    Local: ``<data_dir or $RAFT_DATA_DIR>/squad/v1.1/`` when that folder exists -- it must hold
    ``dev-v1.1.json``; with ``train-v1.1.json`` too the official protocol is used, else the
    offline article split.  Otherwise the Hub (``rajpurkar/squad``).
    """
    root = src.resolve_data_dir(data_dir)
    d = root / LOCAL_RELDIR if root is not None else None
    notes: list[str] = []
    info: dict[str, Any] = {}
    if d is not None and d.is_dir():
        dev_path, train_path = d / "dev-v1.1.json", d / "train-v1.1.json"
        dev_all = _dataset(read_squad_json(dev_path, notes=notes))
        if train_path.is_file():
            train_side, test = _dataset(read_squad_json(train_path, notes=notes)), dev_all
            sources = {"train": src.LOCAL, "test": src.LOCAL}
        else:
            train_side, test = split_by_article(dev_all, offline_test_fraction)
            n_art = len(set(dev_all["title"]))
            n_test_art = len(set(test["title"]))
            sources = {"train": src.LOCAL_SUBSET, "test": src.HELD_OUT}
            info = {"kind": "offline-article-split", "test_fraction_of_articles": offline_test_fraction,
                    "articles": n_art, "test_articles": n_test_art, "seed": POOL_SEED}
            notes.append(
                f"SQuAD: no official training set offline; the official dev set "
                f"({len(dev_all):,} questions, {n_art} articles; squad/v1.1/dev-v1.1.json) was split by "
                f"article (seed {POOL_SEED}): {n_test_art} articles ({len(test):,} questions) are the test "
                f"part, {n_art - n_test_art} articles ({len(train_side):,} questions) form the training side, "
                f"split {POOL_FRACTION:.0%} / {1 - POOL_FRACTION:.0%} into train pool and dev part. "
                f"Not comparable to official SQuAD dev scores."
            )
    else:
        why = (f"no local folder {str(d)!r}" if d is not None
               else f"no local data root is set (--data-dir / ${src.ENV_VAR})")
        log.warning("SQuAD: %s; using the Hugging Face Hub (%s)", why, src.HUB_SQUAD)
        dd = src.load_hub_dataset(src.HUB_SQUAD, why=why)
        train_side, test = dd["train"], dd["validation"]
        sources = {"train": src.HUB, "test": src.HUB}
        if d is not None:
            notes.append(f"SQuAD: not found under the local data root ({d}); loaded from the Hub.")
    pool, dev = split_pool_dev(train_side)
    partial = sources["train"] not in (src.LOCAL, src.HUB) or sources["test"] not in (src.LOCAL, src.HUB)
    return SquadData(pool=pool, dev=dev, tests={"test": test}, sources=sources, partial_data=bool(partial),
                     data_notes=notes, split_info=info)


def split_sizes(data_dir: str | os.PathLike | None = None,
                offline_test_fraction: float = OFFLINE_TEST_FRACTION) -> dict:
    """``{"pool", "dev_part", "source"}`` as ``load_squad`` would split, without ``datasets`` or
    the Hub: local train-v1.1.json questions, else the training side of the offline article
    split of dev-v1.1.json, else (no local folder) the official training size (source "hub")."""
    root = src.resolve_data_dir(data_dir)
    d = root / LOCAL_RELDIR if root is not None else None
    if d is None or not d.is_dir():
        n, source = OFFICIAL_SIZES["train"], src.HUB
    elif (d / "train-v1.1.json").is_file():
        n, source = len(read_squad_json(d / "train-v1.1.json")["id"]), src.LOCAL
    else:
        titles = read_squad_json(d / "dev-v1.1.json")["title"]
        test_titles = offline_test_titles(titles, offline_test_fraction)
        n, source = sum(t not in test_titles for t in titles), src.LOCAL_SUBSET
    k = pool_rows(n)
    return {"pool": k, "dev_part": n - k, "source": source}


def references(examples) -> dict[str, list[str]]:
    """{question id: list of gold answer texts} for ``squad_metrics``."""
    return {i: list(a["text"]) for i, a in zip(examples["id"], examples["answers"])}


# ----------------------------------------------------------------------------------------
# Features (Hugging Face run_qa.py style)
# ----------------------------------------------------------------------------------------
def _check_lengths(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    check_squad_window(max_seq_length, doc_stride, max_query_length)  # a ValueError


def _truncate_questions(questions: list[str], tokenizer, max_query_length: int) -> list[str]:
    """Strip leading whitespace (run_qa) and cut questions to ``max_query_length`` tokens."""
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        if len(offsets) > max_query_length:
            q = q[: offsets[max_query_length - 1][1]]
        out.append(q)
    return out


def _tokenize_pairs(examples, tokenizer, max_seq_length, doc_stride, max_query_length, padding):
    _check_lengths(max_seq_length, doc_stride, max_query_length)
    questions = _truncate_questions(list(examples["question"]), tokenizer, max_query_length)
    return tokenizer(
        questions,
        list(examples["context"]),
        truncation="only_second",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding,
    )


def prepare_train_features(examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                           max_query_length: int = 64, padding: bool | str = "max_length"):
    """Batched examples -> training features with ``start_positions`` / ``end_positions``.

    A window that does not contain the (first) answer points both positions at [CLS] (index 0),
    as in run_qa.py.  Use with ``Dataset.map(batched=True, remove_columns=...)``.
    """
    enc = _tokenize_pairs(examples, tokenizer, max_seq_length, doc_stride, max_query_length, padding)
    sample_mapping = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if len(answers["answer_start"]) == 0:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        tok_start = 0
        while seq_ids[tok_start] != 1:
            tok_start += 1
        tok_end = len(input_ids) - 1
        while seq_ids[tok_end] != 1:
            tok_end -= 1
        if not (offsets[tok_start][0] <= start_char and offsets[tok_end][1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        while tok_start < len(offsets) and seq_ids[tok_start] == 1 and offsets[tok_start][0] <= start_char:
            tok_start += 1
        starts.append(tok_start - 1)
        while seq_ids[tok_end] == 1 and offsets[tok_end][1] >= end_char:
            tok_end -= 1
        ends.append(tok_end + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return enc


def prepare_eval_features(examples, tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                          max_query_length: int = 64, padding: bool | str = "max_length"):
    """Batched examples -> evaluation features with ``example_id`` and ``offset_mapping``
    (``None`` for every token outside the context), for ``postprocess_predictions``."""
    enc = _tokenize_pairs(examples, tokenizer, max_seq_length, doc_stride, max_query_length, padding)
    sample_mapping = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_mapping[i]])
        enc["offset_mapping"][i] = [o if seq_ids[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]
    return enc


def tokenize_train(dataset, tokenizer, num_proc: int | None = None, cache_file_name: str | None = None,
                   **kwargs):
    """``dataset.map(prepare_train_features)`` dropping the example columns."""
    return dataset.map(prepare_train_features, batched=True, remove_columns=dataset.column_names,
                       fn_kwargs={"tokenizer": tokenizer, **kwargs}, num_proc=num_proc,
                       desc="SQuAD train features", cache_file_name=cache_file_name)


def tokenize_eval(dataset, tokenizer, num_proc: int | None = None, cache_file_name: str | None = None,
                   **kwargs):
    """``dataset.map(prepare_eval_features)`` dropping the example columns."""
    return dataset.map(prepare_eval_features, batched=True, remove_columns=dataset.column_names,
                       fn_kwargs={"tokenizer": tokenizer, **kwargs}, num_proc=num_proc,
                       desc="SQuAD eval features", cache_file_name=cache_file_name)


def postprocess_predictions(examples, features, start_logits, end_logits, n_best: int = 20,
                            max_answer_length: int = 30) -> dict[str, str]:
    """Logits of the features -> {example id: answer text} (run_qa's postprocess_qa_predictions
    for SQuAD v1: best start+end score over all windows of an example, answer inside the
    context, end >= start, at most ``max_answer_length`` tokens; "" when no span is valid)."""
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    feat_ids = list(features["example_id"])
    feat_offsets = list(features["offset_mapping"])
    if len(feat_ids) != len(start_logits) or len(feat_ids) != len(end_logits):
        raise ValueError(f"{len(feat_ids)} features but {len(start_logits)} start / {len(end_logits)} end logits")
    by_example: dict[str, list[int]] = collections.defaultdict(list)
    for i, eid in enumerate(feat_ids):
        by_example[eid].append(i)
    predictions: dict[str, str] = {}
    for eid, context in zip(examples["id"], examples["context"]):
        best_score, best = -np.inf, None
        for fi in by_example.get(eid, []):
            s_log, e_log, offsets = start_logits[fi], end_logits[fi], feat_offsets[fi]
            starts = np.argsort(s_log)[-1: -n_best - 1: -1]
            ends = np.argsort(e_log)[-1: -n_best - 1: -1]
            for s in starts:
                if s >= len(offsets) or offsets[s] is None or len(offsets[s]) < 2:
                    continue
                for e in ends:
                    if e >= len(offsets) or offsets[e] is None or len(offsets[e]) < 2:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = s_log[s] + e_log[e]
                    if score > best_score:
                        best_score, best = score, (offsets[s][0], offsets[e][1])
        predictions[eid] = context[best[0]: best[1]] if best is not None else ""
    return predictions
