"""TriviaQA verified web dev in SQuAD format, for the zero-shot transfer SQuAD -> TriviaQA
(`raft zeroshot --target triviaqa`).

The conversion follows the official TriviaQA code the paper's authors used:
``utils/convert_to_squad_format.py`` and ``utils/dataset_utils.py`` of
github.com/mandarjoshi90/triviaqa (commit b2c0046), step by step:

1. ``read_triviaqa_data`` (`verified_data`): in a file with ``VerifiedEval`` true, keep the
   questions with ``QuestionPartOfVerifiedEval`` and -- the ``Web`` domain -- only their
   documents (``EntityPages`` and ``SearchResults``) with ``DocPartOfVerifiedEval``; a question
   left without documents is an error (the script asserts it).
2. ``get_qad_triples`` (`qad_triples`): one question-document pair per ``EntityPages`` then
   ``SearchResults`` entry, in file order. A web file lists both kinds: ``SearchResults`` are read
   from ``evidence/web/<Filename>``, ``EntityPages`` from ``evidence/wikipedia/<Filename>``.
3. ``select_relevant_portion`` (`select_relevant_portion`): the document paragraph by paragraph
   (split at "\\n"), word by word, up to ``max_num_tokens`` (800) tokens; a "\\n" token closes
   each paragraph taken whole and counts; the tokens are joined by one space and stripped.
   **One difference**: the script cuts paragraphs into sentences with NLTK's punkt model and
   words with ``nltk.word_tokenize`` (punctuation split off, quotes rewritten as `` and '');
   here words are whitespace tokens (NLTK and its punkt data are not dependencies of this
   project, and the punkt model cannot be fetched offline). Contexts keep their punctuation and
   the cut falls slightly later in a document; every result says so in its ``data_notes``.
4. ``answer_index_in_document`` (`answer_index_in_document`): the first of the answer's
   ``NormalizedAliases`` (list order) found in the lower-cased context gives the answer: text =
   that alias, ``answer_start`` = where it was found; none found: no answer (the pair is kept
   with an empty ``answers`` list, as the script does for dev files).
5. ``id`` = QuestionId + "--" + Filename, ``qid`` = QuestionId; one article per pair; the
   pairs shuffled with ``random.seed(10)`` (the script's default ``--seed``); ``version`` = the
   file's ``Version``. `convert_to_squad` returns the script's JSON structure exactly.

Scoring (`score`): every converted pair is a test example (flat SQuAD columns of
`raft.data.squad`, so its features and answer extraction apply), a pair without an answer alias
in its context included (empty ``answers``; ``sizes["no_answer"]`` counts them); each pair also
carries its ``ground_truths`` (`ground_truths`). One prediction per pair gives three numbers
(the record's test blocks, `EVAL_SETS`):

* ``triviaqa`` (the headline): TriviaQA's own EM/F1, its evaluation script exactly
  (`raft.data.metrics.triviaqa_metrics`): every verified question-document pair, the maximum
  over the ground truths, TriviaQA's normalisation, averaged over the pairs;
* ``all_pairs``: the authors' number -- SQuAD EM/F1 over every pair, gold "" where the context
  holds no alias (`raft.data.metrics.squad_all_pairs_metrics`: transformers' ``squad_evaluate``,
  which the authors' run_squad.py calls);
* ``has_ans``: official SQuAD v1.1 EM/F1 (`raft.data.metrics.squad_metrics`) over the pairs
  whose context holds an alias, against the alias found (``squad_evaluate``'s ``HasAns_*``).

Sources:

* **local**: the official ``triviaqa-rc`` release unpacked under ``<data-dir>/triviaqa/``:
  ``qa/verified-web-dev.json`` with ``evidence/web/...`` and ``evidence/wikipedia/...``. When the
  ``triviaqa/`` folder exists, missing files are an error listing them, never a download.
* **Hub substitute**: ``mandarjoshi/trivia_qa``, config ``rc.web``, split ``validation``: the
  (unverified) web dev questions with all their evidence documents, converted the same way
  without the verification filter (the Hub keeps no verification flags). Not the paper's test
  set: `TriviaqaData.substitute` is True and a data note says so.

`missing_files` / `uses_hub` tell the workflow, without torch or datasets, whether the local
copy is complete (the evidence files the verified questions need) and whether the Hub would be used.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft.data import sources as src
from raft.data.metrics import squad_all_pairs_metrics, squad_metrics, triviaqa_metrics, triviaqa_normalize_answer

log = logging.getLogger(__name__)

HUB_TRIVIAQA = "mandarjoshi/trivia_qa"
HUB_CONFIG = "rc.web"
HUB_SPLIT = "validation"
LOCAL_RELDIR = Path("triviaqa")
QA_RELPATH = Path("qa") / "verified-web-dev.json"
DOC_KEYS = ("EntityPages", "SearchResults")  # the script's order
EVIDENCE_DIRS = {"EntityPages": Path("evidence") / "wikipedia", "SearchResults": Path("evidence") / "web"}
HUB_DOC_FIELDS = {"EntityPages": ("entity_pages", "wiki_context"),  # Hub column, document text field
                  "SearchResults": ("search_results", "search_context")}
LAYOUT = ("<data-dir>/triviaqa/qa/verified-web-dev.json with the evidence files it names under "
          "<data-dir>/triviaqa/evidence/web/ and evidence/wikipedia/ (the official triviaqa-rc release, unpacked)")
MAX_NUM_TOKENS = 800  # the script's --max_num_tokens default
SHUFFLE_SEED = 10  # the script's --seed default
MISSING_SHOWN = 5  # missing files named in an error message
HEADLINE = "triviaqa"  # TriviaQA's own EM/F1: the score every table and finding leads with
EVAL_SETS = (HEADLINE, "all_pairs", "has_ans")  # the record's test blocks (module docstring, "Scoring")


class TriviaqaFormatError(ValueError):
    """The TriviaQA question file does not have the official format (the message names file and entry)."""


@dataclass
class TriviaqaData:
    """The question-document pairs (SQuAD columns + ground truths), the whole conversion, and their origin."""

    test: Any  # datasets.Dataset: id, question, context, answers (empty: no alias in the context), ground_truths
    squad: dict  # `convert_to_squad` output: every pair, with or without an answer
    source: str  # "local" | "hub"
    substitute: bool  # True: the Hub's rc.web dev set stands in for the verified web dev set
    sizes: dict  # {"questions", "documents" (pairs converted), "no_answer" (pairs without an alias in their context)}
    data_notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ the question file
def read_triviaqa_json(path: str | os.PathLike) -> dict:
    """The official question file as a dict (``Data``, ``Domain``, ``VerifiedEval``, ``Version``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TriviaQA file {str(path)!r} not found; expected {LAYOUT}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        ok = isinstance(data, dict) and isinstance(data["Data"], list)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise TriviaqaFormatError(
            f"{path}: not an official TriviaQA question file ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise TriviaqaFormatError(f"{path}: not an official TriviaQA question file ('Data' is not a list)")
    if data.get("VerifiedEval") is not True or data.get("Domain") != "Web":
        raise TriviaqaFormatError(f"{path}: VerifiedEval={data.get('VerifiedEval')!r}, Domain={data.get('Domain')!r}; "
                                  "expected the verified web file (VerifiedEval true, Domain 'Web')")
    return data


def _flag(path: Path, where: str, entry: Mapping, key: str) -> bool:
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, bool):
        raise TriviaqaFormatError(f"{path}: {where}: no true/false {key!r}")
    return value


def verified_data(data: dict, path: str | os.PathLike = "<question file>") -> list[dict]:
    """The script's ``read_triviaqa_data`` on a verified file: the verified questions, each with
    (Web domain) only its verified documents; a question left without documents is an error."""
    path, out = Path(path), []
    for k, datum in enumerate(data["Data"]):
        where = f"Data[{k}] (QuestionId {datum.get('QuestionId')!r})" if isinstance(datum, Mapping) else f"Data[{k}]"
        if not _flag(path, where, datum, "QuestionPartOfVerifiedEval"):
            continue
        datum = dict(datum)
        if data.get("Domain") == "Web":
            for key in DOC_KEYS:
                datum[key] = [p for p in datum.get(key, [])
                              if _flag(path, f"{where} {key}", p, "DocPartOfVerifiedEval")]
        if not any(datum.get(key) for key in DOC_KEYS):
            raise TriviaqaFormatError(f"{path}: {where}: a verified question without verified documents")
        out.append(datum)
    return out


def qad_triples(data: Iterable[Mapping], path: str | os.PathLike = "<question file>") -> list[dict]:
    """The script's ``get_qad_triples``: one ``{Source, QuestionId, Question, Answer, Filename}``
    per EntityPages then SearchResults entry of each question, in file order."""
    triples = []
    for k, datum in enumerate(data):
        answer = datum.get("Answer")
        if not (isinstance(answer, Mapping) and isinstance(answer.get("NormalizedAliases"), list)
                and isinstance(datum.get("Question"), str) and "QuestionId" in datum):
            raise TriviaqaFormatError(f"{path}: Data[{k}]: needs QuestionId, Question and Answer.NormalizedAliases")
        for key in DOC_KEYS:
            for page in datum.get(key, []):
                if not (isinstance(page, Mapping) and isinstance(page.get("Filename"), str)):
                    raise TriviaqaFormatError(
                        f"{path}: QuestionId {datum['QuestionId']!r}: a {key} entry without Filename")
                triples.append({"Source": key, "QuestionId": datum["QuestionId"], "Question": datum["Question"],
                                "Answer": answer, "Filename": page["Filename"]})
    return triples


# ------------------------------------------------------------------------------ the conversion
def pair_id(qad: Mapping) -> str:
    """A pair's id and evaluation key, "QuestionId--Filename" (``get_question_doc_string``,
    utils/dataset_utils.py:14-15; the web evaluation's key, :6-11 and :17-23)."""
    return f"{qad['QuestionId']}--{qad['Filename']}"


def ground_truths(answer: Mapping) -> list[str]:
    """What a prediction is scored against (``get_ground_truths``, evaluation/triviaqa_evaluation.py:76-77):
    the answer's ``NormalizedAliases`` (as stored) and its ``HumanAnswers`` normalised, if any."""
    return list(answer["NormalizedAliases"]) + [triviaqa_normalize_answer(a) for a in answer.get("HumanAnswers", [])]


def select_relevant_portion(text: str, max_num_tokens: int = MAX_NUM_TOKENS) -> str:
    """The script's truncation with whitespace words (module docstring, step 3): paragraphs at
    "\\n", a "\\n" token after each paragraph taken whole, at most ``max_num_tokens`` tokens."""
    selected: list[str] = []
    for para in text.split("\n"):
        for word in para.split():
            selected.append(word)
            if len(selected) >= max_num_tokens:
                return " ".join(selected).strip()
        selected.append("\n")
    return " ".join(selected).strip()


def answer_index_in_document(answer: Mapping, document: str) -> tuple[str, int]:
    """(alias, index) of the first ``NormalizedAliases`` entry found in the lower-cased
    ``document``; (``NormalizedValue``, -1) when none is found (the script's function)."""
    lowered = document.lower()
    for alias in answer["NormalizedAliases"]:
        index = lowered.find(alias)
        if index != -1:
            return alias, index
    return answer.get("NormalizedValue", ""), -1


def convert_to_squad(documents: Iterable[tuple[Mapping, str]], version, *, max_num_tokens: int = MAX_NUM_TOKENS,
                     seed: int = SHUFFLE_SEED, truths: dict | None = None) -> dict:
    """``(triple, document text)`` pairs -> the script's SQuAD JSON (module docstring, steps 3-5);
    ``truths``, when given, gets {pair id: `ground_truths`} (the evaluation's, by key).

    The script shuffles the triples before converting them; shuffling the converted list with
    the same seed gives the same order (the permutation depends only on the length)."""
    data = []
    for qad, text in documents:
        context = select_relevant_portion(text, max_num_tokens)
        qa = {"question": qad["Question"], "answers": [], "id": pair_id(qad), "qid": qad["QuestionId"]}
        if truths is not None:
            truths[qa["id"]] = ground_truths(qad["Answer"])
        alias, index = answer_index_in_document(qad["Answer"], context)
        if index != -1:
            qa["answers"].append({"text": alias, "answer_start": index})
        data.append({"paragraphs": [{"context": context, "qas": [qa]}]})
    random.Random(seed).shuffle(data)
    return {"data": data, "version": version}


def squad_examples(squad: Mapping, truths: Mapping[str, list[str]]) -> tuple[dict[str, list], int]:
    """(flat SQuAD columns id / question / context / answers / ground_truths of every pair --
    ``answers`` empty where the context holds no alias --, the number of such pairs).
    ``truths``: {pair id: `ground_truths`}. Duplicate ids raise ``TriviaqaFormatError``."""
    cols: dict[str, list] = {"id": [], "question": [], "context": [], "answers": [], "ground_truths": []}
    no_answer = 0
    for article in squad["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                no_answer += not qa["answers"]
                cols["id"].append(qa["id"])
                cols["question"].append(qa["question"])
                cols["context"].append(para["context"])
                cols["answers"].append({"text": [a["text"] for a in qa["answers"]],
                                        "answer_start": [a["answer_start"] for a in qa["answers"]]})
                cols["ground_truths"].append(list(truths[qa["id"]]))
    dup = [i for i, n in collections.Counter(cols["id"]).items() if n > 1]
    if dup:
        raise TriviaqaFormatError(f"TriviaQA conversion: duplicate question-document id {dup[0]!r}")
    return cols, no_answer


# ------------------------------------------------------------------------------ what is there
def local_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``<root>/triviaqa`` when a data root is set (it may not exist), else None."""
    return src.local_path(data_dir, LOCAL_RELDIR)


def uses_hub(data_dir: str | os.PathLike | None = None) -> bool:
    """True when `load_triviaqa` would use the Hub substitute: no root, or no ``<root>/triviaqa/``."""
    d = local_dir(data_dir)
    return d is None or not d.is_dir()


def evidence_path(folder: Path, triple: Mapping) -> Path:
    """Where a triple's document lives under ``<root>/triviaqa``."""
    return folder / EVIDENCE_DIRS[triple["Source"]] / triple["Filename"]


def _verified_triples(qa: Path) -> tuple[dict, list[dict], int]:
    """(question file, its verified question-document triples, verified questions)."""
    raw = read_triviaqa_json(qa)
    data = verified_data(raw, qa)
    return raw, qad_triples(data, qa), len(data)


def _missing_evidence(folder: Path, triples: Iterable[Mapping]) -> list[str]:
    return sorted({str(p) for p in (evidence_path(folder, t) for t in triples) if not p.is_file()})


def missing_files(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The files of a complete local copy that are absent: the question file, else the evidence
    files of its verified documents (sorted); ``[]`` when complete. Paths start with
    ``<data-dir>`` when no root is set. Reads the question file (a bad one raises); no torch."""
    d = local_dir(data_dir)
    qa = (d if d is not None else Path("<data-dir>") / LOCAL_RELDIR) / QA_RELPATH
    if d is None or not qa.is_file():
        return [str(qa)]
    return _missing_evidence(d, _verified_triples(qa)[1])


# ------------------------------------------------------------------------------ loading
def _read_text(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _local(folder: Path) -> tuple[dict, int, dict]:
    """(conversion, questions, ground truths by pair id) of the local verified web dev set;
    missing files are an error."""
    qa = folder / QA_RELPATH
    if not qa.is_file():
        raise FileNotFoundError(f"TriviaQA: missing {str(qa)!r}; expected {LAYOUT}")
    raw, triples, questions = _verified_triples(qa)
    missing = _missing_evidence(folder, triples)
    if missing:
        more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        raise FileNotFoundError(f"TriviaQA: {len(missing)} missing evidence file(s): "
                                f"{', '.join(missing[:MISSING_SHOWN])}{more}; expected {LAYOUT}")
    documents = ((t, _read_text(evidence_path(folder, t))) for t in triples)
    truths: dict = {}
    return convert_to_squad(documents, raw.get("Version"), truths=truths), questions, truths


def hub_documents(rows: Iterable[Mapping]) -> Iterator[tuple[dict, str]]:
    """``(triple, document text)`` of the Hub's rows (question_id, question, answer,
    entity_pages, search_results with their contexts), in the script's order."""
    for row in rows:
        answer = {"NormalizedAliases": list(row["answer"]["normalized_aliases"]),
                  "NormalizedValue": row["answer"]["normalized_value"]}
        for key in DOC_KEYS:
            column, text_field = HUB_DOC_FIELDS[key]
            docs = row[column]
            for filename, text in zip(docs["filename"], docs[text_field]):
                yield ({"Source": key, "QuestionId": row["question_id"], "Question": row["question"],
                        "Answer": answer, "Filename": filename}, text)


def _hub(why: str) -> tuple[dict, int, dict]:
    ds = src.load_hub_dataset(HUB_TRIVIAQA, HUB_CONFIG, why=why, split=HUB_SPLIT)
    truths: dict = {}
    squad = convert_to_squad(hub_documents(ds), f"{HUB_TRIVIAQA}:{HUB_CONFIG}:{HUB_SPLIT}", truths=truths)
    return squad, len(ds), truths


def _dataset(cols: dict[str, list]):
    from datasets import Dataset, Features, List, Value

    features = Features({"id": Value("string"), "question": Value("string"), "context": Value("string"),
                         "answers": {"text": List(Value("string")), "answer_start": List(Value("int32"))},
                         "ground_truths": List(Value("string"))})
    return Dataset.from_dict(cols, features=features)


def load_triviaqa(data_dir: str | os.PathLike | None = None) -> TriviaqaData:
    """Every converted pair: local when ``<root>/triviaqa/`` exists, else the Hub substitute
    (see the module docstring); ``data_notes`` say how they were made."""
    d = local_dir(data_dir)
    notes: list[str] = []
    if uses_hub(data_dir):
        why = (f"no local folder {str(d)!r}" if d is not None
               else f"no local data root is set (--data-dir / ${src.ENV_VAR})")
        log.warning("TriviaQA: %s; using the Hub's %s %s set as a substitute", why, HUB_CONFIG, HUB_SPLIT)
        squad, questions, truths = _hub(why)
        source = src.HUB
        notes.append(f"TriviaQA: SUBSTITUTE -- the verified web dev set was not available ({why}); the Hub's "
                     f"{HUB_TRIVIAQA} {HUB_CONFIG} {HUB_SPLIT} set (every web dev question with every evidence "
                     "document, not only the verified ones) was scored instead: not the paper's test set.")
    else:
        squad, questions, truths = _local(d)
        source = src.LOCAL
    cols, no_answer = squad_examples(squad, truths)
    if not cols["id"]:
        raise TriviaqaFormatError("TriviaQA: no question-document pairs to score")
    notes.append(f"TriviaQA: contexts are the first {MAX_NUM_TOKENS} whitespace tokens of each evidence document "
                 "(the official convert_to_squad_format.py counts NLTK word tokens).")
    notes.append(f"TriviaQA: {no_answer:,} of {len(squad['data']):,} question-document pairs have no answer alias in "
                 "their context: they count in TriviaQA's EM/F1 (the prediction against the aliases) and in the "
                 "all-pairs SQuAD EM/F1 (gold \"\"), not in HasAns "
                 f"({len(cols['id']) - no_answer:,} pairs).")
    return TriviaqaData(test=_dataset(cols), squad=squad, source=source, substitute=source == src.HUB,
                        sizes={"questions": questions, "documents": len(squad["data"]), "no_answer": no_answer},
                        data_notes=notes)


# ------------------------------------------------------------------------------ scoring
def score(predictions: Mapping[str, str], examples) -> tuple[dict[str, dict], dict[str, int]]:
    """({eval set: metrics}, {eval set: pairs scored}) of one prediction per pair (module
    docstring, "Scoring"); ``examples``: `TriviaqaData.test` or a part of it. ``has_ans`` is
    absent when no pair holds an alias (a capped test set)."""
    ids = list(examples["id"])
    truths = dict(zip(ids, examples["ground_truths"]))
    references = {i: list(a["text"]) for i, a in zip(ids, examples["answers"])}
    has_ans = {i: r for i, r in references.items() if r}
    test = {HEADLINE: triviaqa_metrics(predictions, truths),
            "all_pairs": squad_all_pairs_metrics(predictions, references)}
    if has_ans:
        test["has_ans"] = squad_metrics({i: predictions[i] for i in has_ans if i in predictions}, has_ans)
    return test, {HEADLINE: len(ids), "all_pairs": len(ids), "has_ans": len(has_ans)}
