"""`raft bench --finetune-grid CONFIG`: a study's GLUE fine-tuning grid run both ways.

*alone*: one `raft finetune-glue` process per (task, variant, N, seed), as the workflow ran
every run before batching; *batched*: one process per (task, variant, N) running all its seeds,
as the workflow runs them now (`raft.train.finetune`). Both ways run the same runs, one
process after the other (1 thread each), with the flags the workflow would give them
(`raft.study`: the config's layers), on the same pretrained models.

Printed and returned per way: processes, runs, grid wall time, runs per hour, the work
(train + test time from each run's metrics.json ``timings_s``) and the overhead fraction
(grid wall time minus work, over grid wall time: imports, model and data loading,
tokenization, process start), and the ratio of the two grid times. The pretrained models are
the workflow's (``results/pretrain/{variant}/model`` under ``--finetune-results``) or tiny
random ones made here (``--finetune-results`` not given: the overhead is then the largest
share, as the work is small).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raft import study

WAYS = ("alone", "batched")


def grid(config: dict, tasks=None, variants=None, limit_seeds=None) -> list[tuple[str, str, object, list[int]]]:
    """(task, variant, N, seeds) of a config's low-data GLUE runs (``limit_seeds``: the first k seeds)."""
    groups: dict[tuple, list[int]] = {}
    for task, variant, n, seed in study.runs(config, "glue"):
        if n == "full" or (tasks and task not in tasks) or (variants and variant not in variants):
            continue
        groups.setdefault((task, variant, n), []).append(seed)
    return [(t, v, n, seeds[:limit_seeds] if limit_seeds else seeds) for (t, v, n), seeds in groups.items()]


def command(config: dict, task: str, variant: str, n, seeds: list[int], pretrained: Path, output: str,
            data_dir) -> list[str]:
    """The `raft finetune-glue` command line of these runs, with the config's flags."""
    flags = study.cli_args(study.values(study.finetune_settings(config, "glue", task, variant, n)))
    argv = [sys.executable, "-m", "raft.cli", "finetune-glue", "--pretrained", str(pretrained), "--task", task,
            "--n", str(n), "--seed", *map(str, seeds), "--mode", study.mode(config, "glue", variant),
            "--output", output, "--num-threads", "1", *flags.split()]
    return argv + (["--data-dir", str(data_dir)] if data_dir else [])


def run_way(way: str, config: dict, groups, models: dict, data_dir, workdir: Path, echo=print) -> dict:
    """Every run of ``groups`` one way; grid wall time, work, overhead fraction, runs per hour."""
    wall, work, runs, processes = 0.0, 0.0, 0, 0
    for task, variant, n, seeds in groups:
        batches = [seeds] if way == "batched" else [[s] for s in seeds]
        for batch in batches:
            out = workdir / way / task / variant / f"n{n}" / "seed{seed}" / "metrics.json"
            argv = command(config, task, variant, n, batch, models[variant], str(out), data_dir)
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True)
            wall += time.perf_counter() - t0
            processes += 1
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
            for seed in batch:
                timings = json.loads(Path(str(out).replace("{seed}", str(seed))).read_text())["timings_s"]
                work += timings["train"] + timings["test"]
                runs += 1
    row = {"way": way, "processes": processes, "runs": runs, "wall_s": wall, "work_s": work,
           "overhead": (wall - work) / wall if wall else float("nan"),
           "runs_per_hour": runs / wall * 3600 if wall else float("nan")}
    echo(f"{way:<8} {processes:>9} {runs:>5} {wall:>9.1f} {work:>9.1f} {row['overhead']:>9.0%} "
         f"{row['runs_per_hour']:>9.0f}")
    return row


def tiny_models(workdir: Path, vocab_file) -> dict[str, Path]:
    """Random 2 x 64 BERT and RAFT masked-LM models with the BERT vocabulary (no pretraining)."""
    import torch

    from raft.data.sources import bert_tokenizer_from_vocab
    from raft.modeling import RaftForMaskedLM, make_config

    tokenizer = bert_tokenizer_from_vocab(vocab_file)
    out = {}
    for variant in ("bert", "raft"):
        torch.manual_seed(0)
        model = RaftForMaskedLM(make_config(variant, vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=128))
        out[variant] = workdir / "models" / variant
        model.save_pretrained(out[variant])
        tokenizer.save_pretrained(out[variant])
    return out


def load_study(config_files) -> tuple[dict, str | None]:
    """The workflow config of ``config_files`` (merged as ``--configfile`` overlays, validated
    with the schema of the repository they live in) and its data folder."""
    from raft import config as config_

    files = [Path(f) for f in config_files]
    schema = files[0].resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
    if not schema.is_file():
        raise FileNotFoundError(f"--finetune-grid {files[0]}: no workflow schema at {schema} (give a config/ "
                                "file of a raft checkout)")
    cfg = config_.merge_files(files)
    config_.validate(cfg, schema)
    return cfg, config_.resolve_data_dir(cfg)


def finetune_rows(config_files, *, results=None, tasks=None, variants=None, limit_seeds=None, echo=print) -> dict:
    """Both ways over a config's grid -> {"rows": [alone, batched], "speedup": alone / batched wall}."""
    config, data_dir = load_study(config_files)
    if data_dir is None:
        raise FileNotFoundError("--finetune-grid needs a local data folder (data_dir or $RAFT_DATA_DIR)")
    config_file = " + ".join(map(str, config_files))
    groups = grid(config, tasks, variants, limit_seeds)
    with tempfile.TemporaryDirectory(prefix="raft-bench-finetune-") as tmp:
        workdir = Path(tmp)
        if results:
            models = {v: Path(results) / "pretrain" / v / "model" for v in ("bert", "raft")}
        else:
            models = tiny_models(workdir, Path(data_dir) / "vocab" / "bert-base-uncased-vocab.txt")
        echo(f"\nfine-tuning grid of {config_file}: {sum(len(g[3]) for g in groups)} runs in {len(groups)} "
             f"(task, variant, N) groups; models: {'pretrained' if results else 'tiny random'}")
        echo(f"{'way':<8} {'processes':>9} {'runs':>5} {'wall s':>9} {'work s':>9} {'overhead':>9} {'runs/h':>9}")
        rows = [run_way(way, config, groups, models, data_dir, workdir, echo) for way in WAYS]
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    echo(f"batched grid {speedup:.2f}x faster than one process per run")
    return {"config": str(config_file), "rows": rows, "speedup": speedup}
