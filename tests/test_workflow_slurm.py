"""The smoke workflow through a real SLURM (snakemake-executor-plugin-slurm) with the
project's profile (profiles/slurm). Needs a running SLURM where `sinfo` works:

    sudo tests/slurm/install.sh && sudo tests/slurm/start.sh
    python -m pytest -m slurm tests/test_workflow_slurm.py
    sudo tests/slurm/stop.sh

Skipped when `sinfo` does not answer. The test profile is profiles/slurm/config.yaml with
only the cluster-specific placeholders replaced: no account, the local default partition,
fast status checks, SLURM logs kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import CONFIG, REPO, output_of, run_snakemake
from test_workflow_e2e import check_results, smoke_args

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _sinfo() -> list[tuple[str, str, int]]:
    """[(partition, availability, cpus)] or [] when SLURM does not answer."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return []
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a %c"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    rows = []
    for line in proc.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], parts[1], int(re.sub(r"\D", "", parts[2]) or 1)))
    return rows


@pytest.fixture(scope="module")
def slurm_partition() -> tuple[str, int]:
    rows = _sinfo()
    if not rows:
        if os.environ.get("RAFT_REQUIRE_SLURM") == "1":  # set by .ci/run: a missing SLURM is a failure there
            pytest.fail("RAFT_REQUIRE_SLURM=1 but `sinfo` does not answer; see tests/slurm/start.sh")
        pytest.skip("no SLURM here (`sinfo` does not answer); see tests/slurm/start.sh")
    up = [r for r in rows if r[1] == "up"] or rows
    default = next((r for r in up if r[0].endswith("*")), up[0])
    return default[0].rstrip("*"), default[2]


@pytest.fixture(scope="module")
def slurm_profile(tmp_path_factory, slurm_partition) -> Path:
    partition, cpus = slurm_partition
    prof = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    res = prof["default-resources"]
    res.pop("slurm_account", None)
    res["slurm_partition"] = partition
    prof["slurm-no-account"] = True
    prof["cores"] = cpus
    prof["slurm-init-seconds-before-status-checks"] = 5
    prof["slurm-keep-successful-logs"] = True
    prof["latency-wait"] = 10
    prof["keep-going"] = False
    path = tmp_path_factory.mktemp("slurm-profile")
    (path / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, slurm_profile, data_dir):
    workdir = tmp_path_factory.mktemp("smoke-slurm")
    t0 = time.perf_counter()
    proc = run_snakemake(
        "--workflow-profile", slurm_profile, "--verbose", *smoke_args(data_dir),
        workdir=workdir, timeout=1500,
    )
    elapsed = time.perf_counter() - t0
    (workdir / "snakemake.out").write_text(output_of(proc))
    if proc.returncode != 0:
        slurm_logs = "\n".join(
            f"=== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
        ) if (workdir / ".snakemake/slurm_logs").is_dir() else ""
        pytest.fail(f"SLURM smoke workflow failed after {elapsed:.0f} s\n"
                    f"{output_of(proc)[-8000:]}\n{slurm_logs[-8000:]}")
    print(f"\nsmoke workflow via SLURM: {elapsed:.0f} s wall")
    return workdir, elapsed, proc.stdout + proc.stderr


def test_slurm_smoke_outputs(slurm_run):
    workdir, _, _ = slurm_run
    check_results(workdir)


def test_slurm_jobs_went_through_sbatch(slurm_run):
    workdir, _, out = slurm_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    # every rule but `all` is a SLURM job
    assert len(submitted) >= 20, out[-4000:]
    logs = list((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    # .snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<jobid>.log
    rules = {part.removeprefix("rule_") for p in logs for part in p.parts if part.startswith("rule_")}
    for rule in ("prepare_corpus", "pretrain", "finetune_glue", "finetune_squad", "aggregate",
                 "run_notebook", "render_notebook"):
        assert rule in rules, (rule, sorted(rules))
    # the preemption signal of the profile reaches sbatch, for pretraining
    sbatch = [ln for ln in out.splitlines() if "sbatch call:" in ln]
    pretrain = [ln for ln in sbatch if "--comment rule_pretrain_" in ln]
    assert len(pretrain) == 2 and all("--signal=TERM@120" in ln for ln in pretrain), pretrain
    # no job arrays (broken in plugin 2.8), no GPU request in the CPU smoke config
    assert not any("--array" in ln or "--gpus" in ln for ln in sbatch)


def test_slurm_second_run_has_nothing_to_do(slurm_run, slurm_profile, data_dir):
    workdir, _, _ = slurm_run
    proc = run_snakemake("-n", "--workflow-profile", slurm_profile, *smoke_args(data_dir),
                         workdir=workdir, timeout=300)
    assert proc.returncode == 0, output_of(proc)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _squeue_job(comment: str) -> str | None:
    """Id of the running SLURM job whose comment (set by the plugin) is `comment`."""
    proc = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        job_id, _, job_comment = line.partition("|")
        if job_comment.strip() == comment:
            return job_id.strip()
    return None


def test_slurm_preemption_checkpoints_and_resumes(slurm_run, slurm_profile, tmp_path, data_dir):
    """Preemption: SLURM's TERM warning (the profile's `--signal=TERM@120`, which SLURM sends
    to the job steps before the time limit) makes `raft pretrain` checkpoint outside the
    rule's outputs and exit non-zero; Snakemake resubmits the job with a longer runtime
    (runtime x attempt) and the retry resumes from the checkpoint and finishes.

    The signal is sent with `scancel --signal=TERM` as soon as training runs (the same
    delivery as --signal without B:, but deterministic instead of tied to the clock)."""
    smoke_dir, _, _ = slurm_run
    workdir = tmp_path / "wd"
    # reuse the SLURM smoke run's corpus (same config): only pretraining runs here
    shutil.copytree(smoke_dir / "results/corpus", workdir / "results/corpus")
    overlay = tmp_path / "preempt.yaml"
    overlay.write_text(
        "pretrain:\n  max_steps: 120\n  save_steps: 1000\n  eval_steps: 60\n  logging_steps: 5\n"
        "resources:\n  pretrain: {runtime: 5}\n"
    )
    target = "results/pretrain/raft/metrics.json"
    log = workdir / "results/logs/pretrain/raft.log"
    cmd = ["--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), target, "--verbose",
           "--workflow-profile", str(slurm_profile), "--configfile", str(CONFIG / "smoke.yaml"),
           str(overlay), "--config", f"data_dir={data_dir}"]
    from test_workflow import snakemake_cmd

    out_file = tmp_path / "snakemake.out"
    with open(out_file, "w") as out_fh:
        proc = subprocess.Popen(snakemake_cmd() + cmd, cwd=REPO, stdout=out_fh, stderr=subprocess.STDOUT, text=True)
        try:
            job_id, deadline = None, time.time() + 600
            while time.time() < deadline and proc.poll() is None:
                text = log.read_text(errors="replace") if log.is_file() else ""
                if re.search(r"\[pretrain\] step \d+/", text):
                    job_id = _squeue_job("rule_pretrain_wildcards_raft")
                    if job_id:
                        break
                time.sleep(1)
            assert job_id, "pretraining never started under SLURM\n" + out_file.read_text()[-4000:]
            subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
    out = out_file.read_text()
    assert proc.returncode == 0, out[-6000:]
    assert "rule prepare_corpus" not in out
    # one retry, with a longer time limit
    assert "Trying to restart job" in out, out[-4000:]
    limits = [int(t) for t in re.findall(r"--comment rule_pretrain_wildcards_raft .*? -t (\d+)", out)]
    assert limits == [5, 10], limits
    # the retry resumed from the checkpoint written on SIGTERM (the log is the last attempt's)
    text = log.read_text()
    assert "resuming from step" in text, text[-3000:]
    assert sorted((workdir / "results/checkpoints/pretrain/raft").rglob("step-*"))
    metrics = json.loads((workdir / target).read_text())
    assert metrics["steps"] == 120
