"""Several fine-tuning runs in one process (`raft finetune-glue --seed A B C`): the same numbers
as runs done alone, a record per run written as soon as it ends, a crash that loses only the
run in progress, reruns that do only what is missing, and the tokenized-data cache."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

import pytest
import torch

from raft.cli import main as cli

SEEDS = ["11", "12", "13"]
FAST = ["--epochs", "2", "--patience", "2", "--max-test-examples", "48", "--eval-batch-size", "64",
        "--lr", "1e-3", "--num-threads", "1", "--n", "16"]
PATTERN = "n{n}/seed{seed}/metrics.json"


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def argv(pretrained, data_dir, output, seeds, *extra):
    return ["finetune-glue", "--pretrained", str(pretrained), "--task", "rte", "--seed", *seeds,
            "--output", str(output), "--data-dir", str(data_dir), *FAST, *extra]


def read(path):
    return json.loads(path.read_text())


def stable(m):
    """A record without its timings and its place in the process (what may differ between processes)."""
    out = {k: v for k, v in m.items() if k not in ("wall_time_s", "timings_s", "process", "tokenized_cache",
                                                "record_sha1")}
    out["dev_curve"] = [{k: v for k, v in p.items() if k != "time_s"} for p in m["dev_curve"]]
    return out


@pytest.fixture(scope="module")
def batched(tiny_pretrained, data_dir, tmp_path_factory):
    """Three seeds in one process, with a cache folder and a runs folder."""
    root = tmp_path_factory.mktemp("batched")
    cache = root / "cache"
    assert cli(argv(tiny_pretrained["raft"], data_dir, root / PATTERN, SEEDS, "--cache-dir", str(cache),
                    "--runs-dir", str(root / "runs"))) == 0
    return root


def test_batched_runs_equal_single_runs(batched, tiny_pretrained, data_dir, tmp_path):
    for seed in SEEDS:
        assert cli(argv(tiny_pretrained["raft"], data_dir, tmp_path / seed / "metrics.json", [seed])) == 0
        alone, together = read(tmp_path / seed / "metrics.json"), read(batched / f"n16/seed{seed}/metrics.json")
        assert together["test"] == alone["test"]  # exactly equal numbers
        assert stable(together) == stable(alone)
    tests = [read(batched / f"n16/seed{s}/metrics.json")["test"]["test"] for s in SEEDS]
    train_ids = {read(batched / f"n16/seed{s}/metrics.json")["train_ids_sha1"] for s in SEEDS}
    assert len(train_ids) == 3  # three different samples, not one run three times
    assert [read(batched / f"n16/seed{s}/metrics.json")["process"] for s in SEEDS] == [
        {"run": i, "runs": 3} for i in (1, 2, 3)]
    assert tests  # (numbers checked above)


def test_cache_is_hit_in_process_and_by_the_next_job(batched, tiny_pretrained, data_dir, tmp_path):
    first, second = (read(batched / f"n16/seed{s}/metrics.json")["tokenized_cache"] for s in SEEDS[:2])
    assert first == {"tokenized": ["rte-test-test"]}  # the seeds' draws are not cached
    assert second == {"memory": ["rte-test-test"]}
    arrow = list((batched / "cache").glob("rte-test-test-*.arrow"))
    assert len(arrow) == 1
    # the next job of the task (the bert variant, another process) loads the test set from disk
    out = tmp_path / "bert" / "metrics.json"
    assert cli(argv(tiny_pretrained["bert"], data_dir, out, ["11"], "--cache-dir", str(batched / "cache"))) == 0
    assert read(out)["tokenized_cache"] == {"disk": ["rte-test-test"]}


def test_rerun_does_only_what_is_missing(batched, tiny_pretrained, data_dir, caplog):
    """A finished job leaves no per-run copies; rerun with its outputs in place, it does nothing.
    A deleted output (what Snakemake's --forcerun does first) is computed again, not restored."""
    caplog.set_level(logging.INFO, logger="raft")
    assert not list((batched / "runs").glob("*.json"))  # dropped once every run was recorded
    before = {s: (batched / f"n16/seed{s}/metrics.json").read_text() for s in SEEDS}
    assert cli(argv(tiny_pretrained["raft"], data_dir, batched / PATTERN, SEEDS, "--runs-dir",
                    str(batched / "runs"))) == 0
    assert "rte: 0 of 3 runs to do" in caplog.text
    assert {s: (batched / f"n16/seed{s}/metrics.json").read_text() for s in SEEDS} == before
    caplog.clear()
    (batched / "n16/seed12/metrics.json").unlink()
    assert cli(argv(tiny_pretrained["raft"], data_dir, batched / PATTERN, SEEDS, "--runs-dir",
                    str(batched / "runs"))) == 0
    assert "rte: 1 of 3 runs to do" in caplog.text and "seed=12 mode=full" in caplog.text
    assert read(batched / "n16/seed12/metrics.json")["test"] == json.loads(before["12"])["test"]
    assert not list((batched / "runs").glob("*.json"))


def leftover_copy(output, runs):
    """What a killed job leaves: the run's copy in the runs folder, no output (Snakemake deleted it)."""
    rec = read(output)
    runs.mkdir(exist_ok=True)
    copy = runs / f"{rec['request_sha1']}.json"
    copy.write_text(output.read_text())
    output.unlink()
    return copy


@pytest.fixture
def one_run(tiny_pretrained, data_dir, tmp_path):
    """One finished run (seed 11) and the argv that makes it, with a runs folder."""
    out = tmp_path / "out" / "metrics.json"
    args = argv(tiny_pretrained["raft"], data_dir, out, ["11"], "--runs-dir", str(tmp_path / "runs"))
    assert cli(args) == 0
    return out, tmp_path / "runs", args


def test_a_failed_jobs_copy_is_restored_and_checked(one_run, caplog):
    out, runs, args = one_run
    caplog.set_level(logging.INFO, logger="raft")
    first = out.read_text()
    copy = leftover_copy(out, runs)
    assert cli(args) == 0
    assert "rte: 0 of 1 runs to do" in caplog.text and out.read_text() == first
    # an edited copy (a test score typed in) fails its checksum: moved aside, the run computed again
    caplog.clear()
    copy = leftover_copy(out, runs)
    edited = json.loads(copy.read_text())
    edited["test"]["test"]["accuracy"] = 0.99
    copy.write_text(json.dumps(edited))
    assert cli(args) == 0
    assert "rte: 1 of 1 runs to do" in caplog.text
    assert "does not match its checksum" in caplog.text and f"{copy.name}.corrupt" in caplog.text
    assert (runs / f"{copy.name}.corrupt").is_file()
    assert read(out)["test"] == json.loads(first)["test"]  # recomputed: the same numbers
    # a cut-off copy: the same, with a line that names it
    caplog.clear()
    copy = leftover_copy(out, runs)
    copy.write_text(copy.read_text()[:200])
    assert cli(args) == 0
    assert "rte: 1 of 1 runs to do" in caplog.text and f"stored run record {copy}: unreadable" in caplog.text
    assert (runs / f"{copy.name}.corrupt.1").is_file()


def test_a_code_or_data_change_recomputes_a_failed_jobs_copy(one_run, data_dir, tmp_path, monkeypatch, caplog):
    """The request holds the package's source and the data's content: after a bug fix or a data
    edit between a failure and its retry, the leftover copy is not restored."""
    from raft import fingerprint
    from raft.data import glue

    out, runs, args = one_run
    caplog.set_level(logging.INFO, logger="raft")
    leftover_copy(out, runs)
    monkeypatch.setattr(fingerprint, "code_sha1", lambda: "another version of the code")
    assert cli(args) == 0
    assert "rte: 1 of 1 runs to do" in caplog.text
    monkeypatch.undo()
    # the same data at another path restores; one edited row in the training file does not
    import shutil

    caplog.clear()
    copied = tmp_path / "data"
    shutil.copytree(data_dir / "glue" / "RTE", copied / "glue" / "RTE")
    moved = [a if a != str(data_dir) else str(copied) for a in args]
    leftover_copy(out, runs)
    assert cli(moved) == 0
    assert "rte: 0 of 1 runs to do" in caplog.text
    caplog.clear()
    train = copied / "glue" / "RTE" / "train.tsv"
    lines = train.read_text().split("\n")
    lines[5] = lines[5].replace(" ", "  ", 1)
    train.write_text("\n".join(lines))
    glue.clear_cache()  # parsed tables are kept per process; a workflow job is a new process
    leftover_copy(out, runs)
    assert cli(moved) == 0
    assert "rte: 1 of 1 runs to do" in caplog.text


def test_a_cut_off_cache_file_is_rebuilt(batched, tiny_pretrained, data_dir, tmp_path, caplog):
    """A tokenized-cache file that fails to load is moved aside, named in the log, and rebuilt;
    the numbers equal the first run's."""
    caplog.set_level(logging.INFO, logger="raft")
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(batched / "cache", cache)
    (arrow,) = cache.glob("rte-test-test-*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    out = tmp_path / "metrics.json"
    assert cli(argv(tiny_pretrained["raft"], data_dir, out, ["11"], "--cache-dir", str(cache))) == 0
    assert f"tokenized-data cache file {arrow} cannot be loaded" in caplog.text
    assert (cache / f"{arrow.name}.corrupt").is_file() and arrow.is_file()
    assert read(out)["test"] == read(batched / "n16/seed11/metrics.json")["test"]
    assert read(out)["tokenized_cache"] == {"tokenized": ["rte-test-test"]}


def test_changed_settings_run_again(batched, tiny_pretrained, data_dir, tmp_path, caplog):
    """A record made with other settings is not taken for this request."""
    caplog.set_level(logging.INFO, logger="raft")
    import shutil

    shutil.copytree(batched / "n16", tmp_path / "n16")
    assert cli(argv(tiny_pretrained["raft"], data_dir, tmp_path / PATTERN, SEEDS[:1], "--lr", "2e-3")) == 0
    assert "rte: 1 of 1 runs to do" in caplog.text
    assert read(tmp_path / "n16/seed11/metrics.json")["hyperparameters"]["lr"] == 2e-3


def test_kill_during_second_run_keeps_the_first(tiny_pretrained, data_dir, tmp_path):
    """SIGKILL while the second run trains: the first record is complete, no partial second one;
    the rerun does the second and third only."""
    cmd = [sys.executable, "-m", "raft.cli", *argv(tiny_pretrained["raft"], data_dir, tmp_path / PATTERN, SEEDS)]
    cmd[cmd.index("--epochs") + 1] = "12"  # long enough to be killed inside the run
    cmd[cmd.index("--patience") + 1] = "12"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "seed=12] epoch 1/" in line:  # the second run has trained one of its 12 epochs
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    first = read(tmp_path / "n16/seed11/metrics.json")
    assert first["seed"] == 11 and first["test"]["test"]["accuracy"] >= 0
    assert not (tmp_path / "n16/seed12").exists() or not list((tmp_path / "n16/seed12").iterdir())
    first_text = (tmp_path / "n16/seed11/metrics.json").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "rte: 2 of 3 runs to do" in again.stderr
    assert (tmp_path / "n16/seed11/metrics.json").read_text() == first_text
    assert {read(tmp_path / f"n16/seed{s}/metrics.json")["seed"] for s in SEEDS} == {11, 12, 13}


def test_several_runs_need_placeholders(tiny_pretrained, data_dir, tmp_path, capsys):
    assert cli(argv(tiny_pretrained["raft"], data_dir, tmp_path / "metrics.json", SEEDS)) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "{seed}" in err and "11 12 13" in err
    assert not (tmp_path / "metrics.json").exists()
