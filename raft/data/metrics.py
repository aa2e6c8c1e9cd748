"""Official metrics of GLUE (scikit-learn / scipy), SQuAD v1.1 and TriviaQA (the official scripts' logic).

GLUE values are fractions in [0, 1] (as scikit-learn returns them); SQuAD values are percent
(as the official ``evaluate-v1.1.py`` prints them).  Every result dict carries ``score``, the
paper's model-selection score:

=========  ==========================================  =====================================
task       metrics                                     score
=========  ==========================================  =====================================
cola       matthews_correlation                        matthews_correlation
stsb       pearson, spearman                           mean(pearson, spearman)
mrpc, qqp  accuracy, f1 (positive class 1)             mean(accuracy, f1)
others     accuracy                                    accuracy
squad      exact_match, f1 (percent)                   f1
triviaqa   exact_match, f1 (percent, its own script)   f1
=========  ==========================================  =====================================

TriviaQA (`raft.data.triviaqa.score`) has its own normalisation and averaging
(`triviaqa_metrics`); the authors' all-pairs SQuAD number is `squad_all_pairs_metrics`.
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from raft.data.tasks import GLUE_TASKS, check_task  # noqa: F401  (re-exported)


def _as_predictions(task: str, predictions) -> np.ndarray:
    p = np.asarray(predictions)
    if task == "stsb":
        p = p.astype(np.float64)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        if p.ndim != 1:
            raise ValueError(f"stsb predictions must be a 1-D array of scores, got shape {p.shape}")
        return p
    if p.ndim == 2:  # logits / probabilities -> class ids
        p = p.argmax(axis=-1)
    if p.ndim != 1:
        raise ValueError(f"{task} predictions must be class ids (n,) or logits (n, k), got shape {p.shape}")
    return p.astype(np.int64)


def _finite(x: float) -> float:
    """Correlations are undefined for constant inputs; count them as 0 (no correlation)."""
    x = float(x)
    return x if np.isfinite(x) else 0.0


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The official metric(s) of one GLUE task plus the selection ``score``.

    ``predictions``: class ids (n,) or logits (n, k); for stsb the predicted scores (n,) or (n, 1).
    ``labels``: gold class ids, or gold scores for stsb.
    Pearson / Spearman of a constant prediction are undefined; they are reported as 0.0
    (as scikit-learn does for the Matthews correlation).
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    task = check_task(task)
    p = _as_predictions(task, predictions)
    y = np.asarray(labels)
    if len(p) != len(y):
        raise ValueError(f"{task}: {len(p)} predictions but {len(y)} labels")
    if len(y) == 0:
        raise ValueError(f"{task}: no examples to score")
    out: dict[str, float] = {}
    if task == "stsb":
        y = y.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConstantInputWarning
            out["pearson"] = _finite(pearsonr(p, y)[0]) if len(y) > 1 else 0.0
            out["spearman"] = _finite(spearmanr(p, y)[0]) if len(y) > 1 else 0.0
        out["score"] = (out["pearson"] + out["spearman"]) / 2
        return out
    y = y.astype(np.int64)
    if task == "cola":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["matthews_correlation"] = _finite(matthews_corrcoef(y, p))
        out["score"] = out["matthews_correlation"]
        return out
    out["accuracy"] = float(accuracy_score(y, p))
    if task in ("mrpc", "qqp"):
        out["f1"] = float(f1_score(y, p, pos_label=1, average="binary", zero_division=0.0))
        out["score"] = (out["accuracy"] + out["f1"]) / 2
    else:
        out["score"] = out["accuracy"]
    return out


def distinct_predictions(task: str, predictions) -> int | None:
    """How many distinct labels the predictions use (class ids (n,) or logits (n, k), as for
    `glue_metrics`); None for stsb (a regression has no labels to count).

    1 means a constant classifier: every example got the same label, so accuracy is the share
    of that class and MCC is 0 -- the scores measure the class balance, not the model."""
    task = check_task(task)
    if task == "stsb":
        return None
    return len(np.unique(_as_predictions(task, predictions)))


# ----------------------------------------------------------------------------------------
# SQuAD v1.1: the normalisation and scores of the official evaluate-v1.1.py
# ----------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official v1.1)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def squad_f1(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of one prediction against one reference (fraction in [0, 1])."""
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _max_over(fn, prediction: str, ground_truths: Iterable[str]) -> float:
    return max(fn(prediction, gt) for gt in ground_truths)


def squad_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str] | str]) -> dict[str, float]:
    """Official SQuAD v1.1 EM / F1 in percent, the max over each question's references.

    ``predictions``: {question id: predicted text}; ``references``: {question id: list of gold
    answer texts}.  Every reference id is scored; an id without a prediction counts 0 (the
    official script does the same, with a message).  Predictions for unknown ids are an error.
    ``score`` = f1.
    """
    return _best_over_references(predictions, references, squad_exact_match, squad_f1,
                                 ("squad_metrics", "references", "ids", "question", "reference answers"))


def _best_over_references(predictions, references, exact_match, f1_score, words) -> dict[str, float]:
    """EM / F1 in percent over every reference key: per key the best over its references, a key
    without a prediction 0; ``score`` = f1. ``words``: (caller, what is scored, what keys are, a
    key, its references) for the messages."""
    caller, scored, keys, key_word, refs_word = words
    if not references:
        raise ValueError(f"{caller}: no {scored} to score")
    unknown = set(predictions) - set(references)
    if unknown:
        raise ValueError(f"{caller}: {len(unknown)} predictions for unknown {keys}, e.g. {sorted(unknown)[:3]}")
    em = f1 = 0.0
    for key, gts in references.items():
        gts = [gts] if isinstance(gts, str) else list(gts)
        if not gts:
            raise ValueError(f"{caller}: {key_word} {key!r} has no {refs_word}")
        if key in predictions:
            em += _max_over(exact_match, predictions[key], gts)
            f1 += _max_over(f1_score, predictions[key], gts)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "score": 100.0 * f1 / n}


# ----------------------------------------------------------------------------------------
# TriviaQA: the official evaluation, github.com/mandarjoshi90/triviaqa (commit ca43b58; the
# scoring is unchanged since b2c0046), evaluation/triviaqa_evaluation.py
# ----------------------------------------------------------------------------------------
# handle_punc (triviaqa_evaluation.py:23-25): string.punctuation plus four quote marks, each
# replaced by a space -- SQuAD's normalisation deletes punctuation instead
_TRIVIAQA_PUNCT = frozenset(string.punctuation + "\u2018\u2019\u00b4`")


def triviaqa_normalize_answer(s: str) -> str:
    """TriviaQA's ``normalize_answer`` (triviaqa_evaluation.py:14-33): underscores to spaces,
    lower case, punctuation (and ‘ ’ ´ `) to spaces, articles removed, whitespace collapsed."""
    s = s.replace("_", " ").lower()
    s = "".join(" " if ch in _TRIVIAQA_PUNCT else ch for ch in s)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split()).strip()


def triviaqa_f1(prediction: str, ground_truth: str) -> float:
    """``f1_score`` (triviaqa_evaluation.py:36-46): token-overlap F1 after TriviaQA's normalisation."""
    pred_tokens = triviaqa_normalize_answer(prediction).split()
    truth_tokens = triviaqa_normalize_answer(ground_truth).split()
    num_same = sum((collections.Counter(pred_tokens) & collections.Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def triviaqa_exact_match(prediction: str, ground_truth: str) -> float:
    """``exact_match_score`` (triviaqa_evaluation.py:49-50)."""
    return float(triviaqa_normalize_answer(prediction) == triviaqa_normalize_answer(ground_truth))


def triviaqa_metrics(predictions: Mapping[str, str], ground_truths: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """TriviaQA's ``evaluate_triviaqa`` (triviaqa_evaluation.py:102-133) in percent, ``score`` = f1.

    ``ground_truths``: {key: the answer's ground truths} for every key of the evaluation -- for
    the web domain a key is one verified question-document pair, "QuestionId--Filename"
    (utils/dataset_utils.py:6-23), and its ground truths are ``get_ground_truths``
    (triviaqa_evaluation.py:76-77; `raft.data.triviaqa.ground_truths`). Per key, EM and F1 are
    the maximum over the ground truths (``metric_max_over_ground_truths``, :53-58); both are
    summed over the keys and divided by the number of keys (:129-130): a key without a
    prediction counts 0 (:107-111). Predictions for unknown keys are an error here (the script
    ignores them)."""
    return _best_over_references(predictions, ground_truths, triviaqa_exact_match, triviaqa_f1,
                                 ("triviaqa_metrics", "ground truths", "keys", "key", "ground truths"))


# ----------------------------------------------------------------------------------------
# The authors' TriviaQA number: SQuAD EM/F1 over every converted pair (github.com/UKPLab/2022-RAFT
# run_squad.py:481 calls squad_evaluate of transformers_modified/data/metrics/squad_metrics.py)
# ----------------------------------------------------------------------------------------
# compute_predictions_logits writes "empty" when no span is valid (squad_metrics.py:537-538);
# `raft.data.squad.postprocess_predictions` writes "" there (run_qa), which SQuAD v2 scoring
# would count as a correct "no answer"
AUTHORS_NO_SPAN = "empty"


def _v2_f1(prediction: str, gold: str) -> float:
    """``compute_f1`` (squad_metrics.py:67-80): an empty side scores 1 only if both are empty."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return squad_f1(prediction, gold)


def squad_all_pairs_metrics(predictions: Mapping[str, str],
                            references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """``squad_evaluate``'s ``exact`` / ``f1`` (squad_metrics.py:83-105, 119-128, 223-238) in
    percent over every reference id, ``score`` = f1: the gold answers are the references that
    normalise to non-empty text, or ``[""]`` when there are none (:91-95: a pair whose context
    holds no answer alias), EM / F1 the maximum over them (SQuAD v1.1 normalisation, v2
    ``compute_f1``), averaged over the ids with a prediction (:97-99, :121). A prediction ""
    (no valid span) is scored as the authors' ``AUTHORS_NO_SPAN``."""
    em = f1 = 0.0
    scored = 0
    for qid, gts in references.items():
        gold = [g for g in ([gts] if isinstance(gts, str) else gts) if normalize_answer(g)] or [""]
        if qid not in predictions:
            continue
        pred = predictions[qid] or AUTHORS_NO_SPAN
        em += max(squad_exact_match(pred, g) for g in gold)
        f1 += max(_v2_f1(pred, g) for g in gold)
        scored += 1
    if not scored:
        raise ValueError("squad_all_pairs_metrics: no reference id has a prediction")
    out = {"exact_match": 100.0 * em / scored, "f1": 100.0 * f1 / scored}
    out["score"] = out["f1"]
    return out
