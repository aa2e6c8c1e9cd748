"""The GLUE task registry: one entry per task, read by the data readers (`raft.data.glue`),
the metrics, the `raft finetune-glue` command, the workflow and the analysis. The workflow
schema's task names are checked against it by a test (tests/test_settings.py).

Tasks are named as the Hub's GLUE configs: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    name: str
    folder: str  # GLUE folder name under <root>/glue/
    label_names: tuple[str, ...]  # () for regression
    is_regression: bool
    hub_keys: tuple[str, str | None]  # Hub column names of text_a / text_b
    hub_eval_splits: dict[str, str]  # our eval-set name -> Hub split
    local_eval_files: dict[str, str]  # our eval-set name -> local file name
    # local TSV columns: header name of text_a, text_b, label (None: headerless file)
    local_columns: tuple[str, str | None, str] | None
    full_train_size: int  # size of the official training set (for notes)
    test_size: dict[str, int]  # sizes of the official validation sets (for notes)
    metric_names: tuple[str, ...] = ()  # the first ones feed the selection score (raft.data.metrics)
    selection_metric: str = ""  # description of the selection score, for result files
    layout: str = ""  # the local folder's expected layout, for error messages

    @property
    def label(self) -> str:
        """The task's display name (CoLA, SST-2, ...; also its GLUE folder name)."""
        return self.folder

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)


TASK_INFO: dict[str, TaskInfo] = {
    "cola": TaskInfo("cola", "CoLA", ("unacceptable", "acceptable"), False, ("sentence", None),
                     {"test": "validation"}, {"test": "dev.tsv"}, None, 8551, {"test": 1043},
        metric_names=("matthews_correlation",), selection_metric="matthews_correlation",
        layout="CoLA/{train,dev}.tsv (no header: source, label, mark, sentence)"),
    "sst2": TaskInfo("sst2", "SST-2", ("negative", "positive"), False, ("sentence", None),
                     {"test": "validation"}, {"test": "dev.tsv"}, ("sentence", None, "label"), 67349, {"test": 872},
        metric_names=("accuracy",), selection_metric="accuracy",
        layout="SST-2/{train,dev}.tsv (header: sentence label)"),
    "mrpc": TaskInfo("mrpc", "MRPC", ("not_equivalent", "equivalent"), False, ("sentence1", "sentence2"),
                     {"test": "validation"}, {"test": "dev.tsv"}, ("#1 String", "#2 String", "Quality"), 3668,
                     {"test": 408},
        metric_names=("accuracy", "f1"), selection_metric="mean(accuracy, f1)",
        layout="MRPC/{train,dev}.tsv (header: Quality #1 ID #2 ID #1 String #2 String)"),
    "stsb": TaskInfo("stsb", "STS-B", (), True, ("sentence1", "sentence2"),
                     {"test": "validation"}, {"test": "dev.tsv"}, ("sentence1", "sentence2", "score"), 5749,
                     {"test": 1500},
        metric_names=("pearson", "spearman"), selection_metric="mean(pearson, spearman)",
        layout="STS-B/{train,dev}.tsv (GLUE header ending in sentence1 sentence2 score)"),
    "qqp": TaskInfo("qqp", "QQP", ("not_duplicate", "duplicate"), False, ("question1", "question2"),
                    {"test": "validation"}, {"test": "dev.tsv"}, ("question1", "question2", "is_duplicate"), 363846,
                    {"test": 40430},
        metric_names=("accuracy", "f1"), selection_metric="mean(accuracy, f1)",
        layout="QQP/{train.tsv | train_subset.tsv} and {dev.tsv | train_rows.tsv} (header: ... question1 question2 is_duplicate; train_rows.tsv headerless GLUE rows)"),
    "mnli": TaskInfo("mnli", "MNLI", ("entailment", "neutral", "contradiction"), False, ("premise", "hypothesis"),
                     {"matched": "validation_matched", "mismatched": "validation_mismatched"},
                     {"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"},
                     ("sentence1", "sentence2", "gold_label"), 392702, {"matched": 9815, "mismatched": 9832},
        metric_names=("accuracy",), selection_metric="accuracy",
        layout="MNLI/{train.tsv | train_subset.tsv}, dev_matched.tsv, dev_mismatched.tsv (header: ... sentence1 sentence2 ... gold_label)"),
    "qnli": TaskInfo("qnli", "QNLI", ("entailment", "not_entailment"), False, ("question", "sentence"),
                     {"test": "validation"}, {"test": "dev.tsv"}, ("question", "sentence", "label"), 104743,
                     {"test": 5463},
        metric_names=("accuracy",), selection_metric="accuracy",
        layout="QNLI/{train.tsv | train_subset.tsv}, dev.tsv (header: index question sentence label)"),
    "rte": TaskInfo("rte", "RTE", ("entailment", "not_entailment"), False, ("sentence1", "sentence2"),
                    {"test": "validation"}, {"test": "dev.tsv"}, ("sentence1", "sentence2", "label"), 2490,
                    {"test": 277},
        metric_names=("accuracy",), selection_metric="accuracy",
        layout="RTE/{train,dev}.tsv (header: index sentence1 sentence2 label)"),
    "wnli": TaskInfo("wnli", "WNLI", ("not_entailment", "entailment"), False, ("sentence1", "sentence2"),
                     {"test": "validation"}, {"test": "dev.tsv"}, ("sentence1", "sentence2", "label"), 635,
                     {"test": 71},
        metric_names=("accuracy",), selection_metric="accuracy",
        layout="WNLI/{train,dev}.tsv (header: index sentence1 sentence2 label)"),
}

GLUE_TASKS = tuple(TASK_INFO)
GLUE_METRIC_NAMES = {name: info.metric_names for name, info in TASK_INFO.items()}
SELECTION_METRIC = {name: info.selection_metric for name, info in TASK_INFO.items()}


def check_task(task: str) -> str:
    t = str(task).lower()
    if t not in TASK_INFO:
        raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return t
