"""Synthetic result trees (the formats of docs/architecture.md, "Result files") for the
analysis and notebook tests, plus checks that the generator itself follows the format.

Other analysis tests import ``make_results``, ``write_run`` and friends from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GELU_NUM = [-0.0012423594497499122, 0.5080497063245629, 0.41586363182937475,
            0.13022718688035761, 0.024355900098993424, 0.00290283948155535]
GELU_DEN = [-0.06675015696494944, 0.17927646217001553, 0.03746682605496631,
            1.6561610853276082e-10]

# metric names as raft/data/metrics.py writes them (GLUE fractions, SQuAD percent)
GLUE_METRICS = {
    "cola": ("matthews_correlation",), "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"), "qqp": ("accuracy", "f1"), "mnli": ("accuracy",),
    "qnli": ("accuracy",), "rte": ("accuracy",),
}


def reference_rational_numpy(x, numerator, denominator):
    """Independent test formula: (a0 + ... + a5 x^5) / (1 + sum |b_k| |x|^k)."""
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    p = np.zeros_like(x)
    for a in reversed(list(numerator)):
        p = p * x + a
    q = np.ones_like(x)
    for k, b in enumerate(denominator, start=1):
        q = q + abs(b) * ax**k
    return p / q


def rafs(layers: int, rng: np.random.Generator | None = None, scale: float = 0.0) -> dict:
    """GELU-initialised RAFs for ``layers`` FFN layers and the pooler, optionally perturbed."""
    out = {}
    for name in [f"layer.{i}" for i in range(layers)] + ["pooler"]:
        num = np.array(GELU_NUM)
        den = np.array(GELU_DEN)
        if rng is not None and scale:
            num = num + scale * rng.standard_normal(num.shape)
            den = den + scale * rng.standard_normal(den.shape)
        out[name] = {"numerator": [round(float(v), 8) for v in num],
                     "denominator": [round(float(v), 8) for v in den]}
    return out


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))


def write_pretrain(root: Path, variant: str, *, perplexity: float, layers: int = 3, steps: int = 100,
                   snapshots: int = 4, seed: int = 0, seq_len: int = 128,
                   max_position_embeddings: int = 512) -> None:
    d = root / "pretrain" / variant
    rng = np.random.default_rng(seed + (1 if variant == "raft" else 0))
    final = rafs(layers, rng, 0.05) if variant == "raft" else {}
    _dump(d / "metrics.json", {
        "variant": variant, "seed": seed, "steps": steps, "tokens_seen": steps * 4096,
        "eval_loss": float(np.log(perplexity)), "perplexity": perplexity, "wall_time_s": 123.5,
        "tokens_per_s": 3316.6, "device": "cpu",
        "model": {"num_hidden_layers": layers, "hidden_size": 32, "seq_len": seq_len,
                  "max_position_embeddings": max_position_embeddings},
        "rational": {"degrees": [5, 4], "init": "gelu"} if variant == "raft" else {},
        "data": {"source": "local", "train_sequences": 1000, "validation_sequences": 10, "seq_len": seq_len},
        "hyperparameters": {"lr": 7e-4},
    })
    lines = ["step,tokens,loss,lr,val_loss,val_perplexity"]
    for i in range(1, 11):
        step = i * steps // 10
        loss = 8.0 - 0.4 * i + (0.1 if variant == "bert" else 0.0)
        val = f"{loss + 0.1:.4f},{np.exp(loss + 0.1):.4f}" if i % 5 == 0 else ","
        lines.append(f"{step},{step * 4096},{loss:.4f},0.0007,{val}")
    (d / "log.csv").write_text("\n".join(lines) + "\n")
    if variant == "raft":
        init = rafs(layers)
        with open(d / "rationals.jsonl", "w") as f:
            for k in range(snapshots):
                t = k / (snapshots - 1)
                snap = {name: {key: [(1 - t) * a + t * b for a, b in zip(init[name][key], final[name][key])]
                               for key in ("numerator", "denominator")} for name in init}
                f.write(json.dumps({"step": int(round(t * steps)), "rationals": snap}) + "\n")


def write_run(root: Path, study: str, task: str, variant: str, n, seed: int, test: dict, *,
              mode: str = "full", partial: bool = False, train_source: str = "local",
              test_source: str = "local", notes: list[str] | None = None,
              trainable_parameters: int = 1000, rationals: dict | None = None,
              hyperparameters: dict | None = None, constant: bool | None = None) -> Path:
    """One metrics.json. ``constant``: None writes the format before constant-prediction
    tracking (no ``distinct_predictions`` / ``constant_predictions``); True / False add them
    as raft/train/finetune_glue.py does: ``distinct_predictions`` {eval set: 1 / 2} and
    ``constant_predictions`` True / False (both null for STS-B)."""
    if study == "squad":
        d = root / "squad" / variant / f"n{n}" / f"seed{seed}"
    else:
        d = root / study / task / variant / f"n{n}" / f"seed{seed}"
    m = {
        "task": task, "variant": variant, "n": n, "seed": seed, "mode": mode,
        "pretrained": f"results/pretrain/{variant}/model",
        "test": test, "selection_metric": "score", "best_dev_score": 0.5, "best_epoch": 3,
        "dev_curve": [{"epoch": 1, "score": 0.4, "loss": 0.7}, {"epoch": 2, "score": 0.5, "loss": 0.6}],
        "sizes": {"pool": 100, "dev_part": 30, "train": 100 if n != "full" else 90,
                  "dev": 30, "test": {k: 50 for k in test}},
        "sources": {"train": train_source, "test": test_source},
        "partial_data": partial, "data_notes": list(notes or []),
        "trainable_parameters": trainable_parameters, "hyperparameters": {"lr": 5e-5, **(hyperparameters or {})},
        "wall_time_s": 10.0, "device": "cpu", "rationals": rationals or {},
    }
    if constant is not None and task != "squad":
        regression = task == "stsb"
        m["distinct_predictions"] = None if regression else {k: 1 if constant else 2 for k in test}
        m["constant_predictions"] = None if regression else bool(constant)
    _dump(d / "metrics.json", m)
    return d / "metrics.json"


def squad_hyperparameters(max_seq_length: int, doc_stride: int) -> dict:
    """The window settings of a SQuAD run's ``hyperparameters`` (raft/train/finetune_squad.py)."""
    return {"max_seq_length": max_seq_length, "doc_stride": doc_stride, "max_query_length": 64}


def glue_test_metrics(task: str, base: float) -> dict:
    names = GLUE_METRICS[task]
    vals = {name: round(base + 0.01 * i, 6) for i, name in enumerate(names)}
    vals["score"] = round(float(np.mean(list(vals.values()))), 6)
    if task == "mnli":
        return {"matched": dict(vals), "mismatched": {k: round(v - 0.01, 6) for k, v in vals.items()}}
    return {"test": vals}


ZEROSHOT_SEEDS = [2022, 202206, 20220602, 2259, 5309, 49]


# TriviaQA's sizes: 1,000 question-document pairs, 300 without an alias in their context
TRIVIAQA_SIZES = {"questions": 400, "documents": 1000, "no_answer": 300,
                  "test": {"triviaqa": 1000, "all_pairs": 1000, "has_ans": 700}, "features": {"test": 2500}}


def write_zeroshot(root, target, variant, seed, test, *, substitute=False, partial=False, n="full",
                   mode="full", train_source="local", notes=(), constant=None, sizes=None):
    """One `raft zeroshot` metrics.json (docs/architecture.md) at its contract path; ``test``: the
    test block ({eval set: {metric: value}})."""
    m = {"target": target, "source_task": {"snli": "mnli", "triviaqa": "squad"}[target], "variant": variant,
         "n": n, "seed": seed, "mode": mode, "model": f"results/models/{variant}/seed{seed}",
         "source_metrics": None, "test": test, "sizes": sizes or {"test": {"test": 100}},
         "sources": {"train": train_source, "test": "hub" if substitute else "local"}, "substitute": substitute,
         "partial_data": partial, "data_notes": list(notes), "hyperparameters": {"max_seq_length": 128},
         "wall_time_s": 3.0, "device": "cpu"}
    if constant is not None:
        m["distinct_predictions"], m["constant_predictions"] = {"test": 1 if constant else 3}, constant
    path = root / "zeroshot" / target / variant / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))
    return path


# TriviaQA's three scores per BERT seed i: (EM, F1) = base + i; RAFT: EM - 1, F1 + F1_GAIN[i]
TRIVIAQA_BASE = {"triviaqa": (40.0, 50.0), "all_pairs": (30.0, 36.0), "has_ans": (45.0, 60.0)}
F1_GAIN = [0.5, -0.4, 0.3, -0.6, 0.2, -0.1]


def triviaqa_test(i: int, variant: str) -> dict:
    """The test block of a TriviaQA record (`TRIVIAQA_BASE`)."""
    em_d, f1_d = (-1.0, F1_GAIN[i]) if variant == "raft" else (0.0, 0.0)
    return {name: {"exact_match": em + i + em_d, "f1": f1 + i + f1_d, "score": f1 + i + f1_d}
            for name, (em, f1) in TRIVIAQA_BASE.items()}


def zeroshot_tree(root, *, substitute=True):
    """SNLI: RAFT = BERT + 0.02 accuracy every seed; TriviaQA (substitute by default), three scores
    each: RAFT EM = BERT EM - 1 every seed, F1 differences of mixed sign."""
    for i, seed in enumerate(ZEROSHOT_SEEDS):
        for variant, gain in (("bert", 0.0), ("raft", 0.02)):
            acc = round(0.6 + 0.01 * i + gain, 6)
            write_zeroshot(root, "snli", variant, seed, {"test": {"accuracy": acc, "score": acc}}, constant=False,
                           train_source="local-subset", partial=True, notes=["MNLI: a local subset"])
        for variant in ("bert", "raft"):
            write_zeroshot(root, "triviaqa", variant, seed, triviaqa_test(i, variant), sizes=TRIVIAQA_SIZES,
                           mode="frozen_rafs" if variant == "raft" else "full", substitute=substitute,
                           notes=["TriviaQA: SUBSTITUTE"] if substitute else ())
    return root


def make_results(root: Path, *, tasks=("cola", "mrpc", "mnli"), ns=(100, "full"), seeds=(1, 2, 3),
                 layers: int = 3, raft_gain: float = 0.02, efficient: bool = True,
                 squad: bool = True, pretrain: bool = True, squad_windows: dict | None = None,
                 constant_tasks: tuple = (), zeroshot: bool = False) -> Path:
    """A small complete results/ tree. RAFT = BERT + ``raft_gain`` (+ seed noise) on GLUE;
    MNLI is marked partial (local subset, held-out test). Pretraining: sequences of 128 tokens,
    512 positions. SQuAD windows: ``squad_windows`` {variant: (max_seq_length, doc_stride)},
    default 384 / 128 for both (the paper config). ``constant_tasks``: every GLUE and
    parameter-efficient run of these tasks at the first N predicted one class for every test
    example (``write_run(constant=True)``), the other GLUE runs did not (``constant=False``);
    empty (default): the files predate the field (``constant=None``). ``zeroshot``: also the
    zero-shot runs of `zeroshot_tree` (TriviaQA from the Hub substitute)."""

    def const(task, n):
        return None if not constant_tasks else (task in constant_tasks and n == ns[0])

    squad_windows = {"bert": (384, 128), "raft": (384, 128), **(squad_windows or {})}
    root = Path(root)
    if zeroshot:
        zeroshot_tree(root)
    rng = np.random.default_rng(0)
    if pretrain:
        write_pretrain(root, "bert", perplexity=12.5, layers=layers)
        write_pretrain(root, "raft", perplexity=11.75, layers=layers)
    pre = rafs(layers, np.random.default_rng(1), 0.05)
    for task in tasks:
        for n in ns:
            for seed in (seeds if n != "full" else seeds[:2]):
                base = 0.6 + 0.05 * rng.standard_normal()
                for variant in ("bert", "raft"):
                    gain = raft_gain + 0.01 * rng.standard_normal() if variant == "raft" else 0.0
                    partial = task == "mnli"
                    r = None
                    if variant == "raft":
                        r = {k: {kk: [a + 0.03 * rng.standard_normal() for a in vv] for kk, vv in v.items()}
                             for k, v in pre.items()}
                    write_run(root, "glue", task, variant, n, seed, glue_test_metrics(task, base + gain),
                              partial=partial, train_source="local-subset" if partial else "local",
                              test_source="held-out" if partial else "local",
                              notes=["train pool subsampled to 2,000 examples"] if partial else [],
                              trainable_parameters=110_000_000, rationals=r, constant=const(task, n))
    if efficient:
        for task in tasks[:2]:
            for seed in seeds:
                base = 0.5 + 0.05 * rng.standard_normal()
                write_run(root, "glue_efficient", task, "bert", 100, seed, glue_test_metrics(task, base),
                          mode="bias_head", trainable_parameters=1666, constant=const(task, 100))
                write_run(root, "glue_efficient", task, "raft", 100, seed,
                          glue_test_metrics(task, base + 0.01 * rng.standard_normal()),
                          mode="raf_head", trainable_parameters=1679, rationals=pre, constant=const(task, 100))
    if squad:
        for n in ns:
            for seed in (seeds if n != "full" else seeds[:2]):
                base = 40 + 5 * rng.standard_normal()
                for variant in ("bert", "raft"):
                    g = 1.0 if variant == "raft" else 0.0
                    em, f1 = round(base + g, 4), round(base + 10 + g, 4)
                    write_run(root, "squad", "squad", variant, n, seed,
                              {"test": {"exact_match": em, "f1": f1, "score": f1}},
                              mode="frozen_rafs" if variant == "raft" else "full",
                              rationals=pre if variant == "raft" else None,
                              hyperparameters=squad_hyperparameters(*squad_windows[variant]))
    return root


# ------------------------------------------------------------------ checks of the generator
def test_make_results_follows_layout(tmp_path):
    root = make_results(tmp_path / "results")
    m = json.loads((root / "glue/mnli/raft/n100/seed1/metrics.json").read_text())
    assert set(m["test"]) == {"matched", "mismatched"}
    assert m["partial_data"] is True and m["sources"]["test"] == "held-out"
    assert set(m["rationals"]) == {"layer.0", "layer.1", "layer.2", "pooler"}
    assert (root / "glue/cola/bert/nfull/seed2/metrics.json").is_file()
    assert not (root / "glue/cola/bert/nfull/seed3/metrics.json").exists()
    assert (root / "squad/raft/n100/seed3/metrics.json").is_file()
    snaps = (root / "pretrain/raft/rationals.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in snaps] == [0, 33, 67, 100]
    assert (root / "pretrain/bert/log.csv").read_text().startswith("step,tokens,loss,lr,val_loss,val_perplexity\n")


def test_make_results_constant_runs(tmp_path):
    root = make_results(tmp_path / "results", tasks=("cola", "stsb"), squad=False, pretrain=False,
                        constant_tasks=("cola",))
    m = json.loads((root / "glue/cola/raft/n100/seed1/metrics.json").read_text())
    assert m["constant_predictions"] is True and m["distinct_predictions"] == {"test": 1}
    assert set(m["test"]["test"]) == {"matthews_correlation", "score"}  # test entries: metrics only
    m = json.loads((root / "glue/cola/bert/nfull/seed1/metrics.json").read_text())
    assert m["constant_predictions"] is False and m["distinct_predictions"] == {"test": 2}
    m = json.loads((root / "glue/stsb/bert/n100/seed1/metrics.json").read_text())
    assert m["constant_predictions"] is None and m["distinct_predictions"] is None
    m = json.loads((root / "glue_efficient/cola/bert/n100/seed1/metrics.json").read_text())
    assert m["constant_predictions"] is True
    old = make_results(tmp_path / "old", tasks=("cola",), squad=False, pretrain=False)
    m = json.loads((old / "glue/cola/raft/n100/seed1/metrics.json").read_text())
    assert "constant_predictions" not in m and "distinct_predictions" not in m


def test_reference_formula_matches_gelu_init():
    x = np.linspace(-3, 3, 61)
    from scipy.special import erf

    gelu = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    assert np.max(np.abs(reference_rational_numpy(x, GELU_NUM, GELU_DEN) - gelu)) < 5e-3


def test_rational_numpy_matches_reference():
    """The analysis evaluates RAFs with raft.rational.rational_numpy: check it against this
    file's independent formula."""
    import raft.rational as r

    x = np.linspace(-6, 6, 241)
    rng = np.random.default_rng(3)
    num, den = rng.standard_normal(6), rng.standard_normal(4)
    np.testing.assert_allclose(r.rational_numpy(x, num, den), reference_rational_numpy(x, num, den),
                               rtol=1e-12, atol=1e-12)
