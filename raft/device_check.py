"""`raft device-check`: the GPU path checked in one command (one GPU, at most ~8 minutes).

    raft device-check --data-dir ../shared/data --output device-check.json

Parts (``--parts``, in this order; each one a function returning ``{name, ok, status, seconds,
details}``; a failing part does not stop the others; no new part starts once ``--budget-s``
is spent, and the report is rewritten after every part, so a killed check keeps what it had):

  kernel       the rational kernels against the float64 reference: values and the three
               gradients (x, numerator, denominator), fp32 and bf16. CUDA: triton and compile;
               CPU: eager and cpp. Tolerances as in tests/test_rational_triton.py.
  determinism  two backward passes give bit-identical gradients (CUDA: triton; CPU: cpp).
  bench        `raft bench`'s sections at a reduced repeat count: RAF/GELU kernel rows per
               backend and dtype, the RAFT/BERT training-step ratio (BERT-base, bf16, SDPA)
               and pretraining tokens/s per variant (the real pretraining step).
  pretrain     `raft pretrain` of bert and raft (CUDA: BERT-base, bf16) on a small corpus
               prepared from --data-dir (else a synthetic one): SIGTERM after the first
               checkpoint line -> exit 75, the same command again -> completes, right step count.
  ddp          `torchrun --nproc_per_node 2` pretraining (needs two GPUs; skipped otherwise).
  finetune     `raft finetune-glue` RTE N=100, one epoch (CUDA: bf16) from the pretrained raft
               model (needs --data-dir).
  compile      CUDA: `raft pretrain --compile` of raft, preempted and resumed, against the eager
               run's loss and tokens/s; `raft finetune-glue --compile` when time remains.

With ``--device cpu`` (the tests) the same parts run at toy sizes where they can; the
CUDA-only ones (ddp, compile) are reported as skipped. Exit code 0 when no part failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raft.train import runtime

PROG = "raft device-check"
PREEMPTED = runtime.EXIT_PREEMPTED


# ------------------------------------------------------------------------------ sizes and context
@dataclass(frozen=True)
class Size:
    """How big each part runs: "base" on a GPU, "tiny" on the CPU."""

    name: str
    model: tuple  # layers, hidden, heads, ffn
    seq_len: int
    batch: int  # pretraining sequences per step
    steps: int  # pretraining steps
    save_steps: int
    kernel_numel: int
    determinism_numel: int
    bench_shapes: tuple
    bench_model: tuple  # bench.MODEL_SHAPES layout: layers, hidden, heads, ffn, batch, quick batch
    bench_batch: int  # pretraining tokens/s rows
    documents: int  # prepared from --data-dir
    synthetic: tuple  # train, validation sequences of the synthetic corpus
    vocab_size: int  # of the synthetic corpus
    finetune_batch: int
    max_test_examples: int | None


SIZES = {
    "base": Size("base", (12, 768, 12, 3072), 128, 32, 30, 10, (1 << 16) + 7, 1 << 22,
                 ((32, 128, 3072), (8, 128, 1024)), (12, 768, 12, 3072, 8, 2), 64, 120, (2048, 128), 30522, 32, None),
    "tiny": Size("tiny", (1, 32, 2, 64), 32, 8, 100, 5, 4099, 1 << 16,
                 ((2, 8, 16),), (1, 32, 2, 64, 2, 2), 4, 12, (256, 16), 200, 16, 32),
}


class Skip(Exception):
    """A part that cannot run here (the reason is reported)."""


@dataclass
class Check:
    device: torch.device
    size: Size
    workdir: Path
    data_dir: Path | None
    deadline: float  # time.perf_counter() after which no new part starts
    repeats: int = 3
    threads: int | None = None  # CPU threads of the subprocesses (OMP_NUM_THREADS)
    shared: dict = field(default_factory=dict)  # what one part leaves for another (corpus, runs, models)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        return "bf16" if self.cuda else "fp32"

    def env(self) -> dict:
        """The subprocesses' environment: plain progress lines, unbuffered, the thread count."""
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        return env

    def timeout(self, floor: float = 60.0) -> float:
        """Seconds a subprocess may take: what is left of the budget, at least `floor`."""
        return max(floor, self.deadline - time.perf_counter() + 30.0)


# ------------------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the GPU if there is one (cpu: toy sizes, CUDA-only parts skipped)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="local data root: the corpus is prepared from it and fine-tuning reads GLUE RTE "
                             "(default: a synthetic corpus, no fine-tuning)")
    parser.add_argument("--output", type=Path, default=Path("device-check.json"), help="the JSON report")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts ({','.join(PARTS)})")
    parser.add_argument("--budget-s", type=float, default=480.0, help="no new part starts after this many seconds")
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="model and data sizes (default: base on CUDA, tiny on the CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the bench rows")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of every part (torch and OMP_NUM_THREADS; default: 1 with --device cpu, "
                             "where the toy sizes run fastest on one thread, else torch's choice)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep corpus, runs and logs here (default: a temporary folder, removed)")


def main(args: argparse.Namespace) -> int:
    return runtime.run_command(PROG, _device_check, args)


def _device_check(args: argparse.Namespace) -> int:
    device = runtime.select_device(args.device)
    names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in names if p not in PARTS]
    if unknown:
        raise runtime.UsageError(f"unknown part(s) {', '.join(unknown)}; choose from {','.join(PARTS)}")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise runtime.UsageError(f"--data-dir {str(args.data_dir)!r} is not a folder")
    size = SIZES[args.size or ("base" if device.type == "cuda" else "tiny")]
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="raft-device-check-") as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = Check(device, size, workdir, args.data_dir.resolve() if args.data_dir else None,
                    time.perf_counter() + args.budget_s, args.repeats, threads)
        try:
            runtime.set_num_threads(threads)
            report = run_parts(ctx, names, args.output, args.budget_s, keep=args.workdir is not None)
        finally:
            torch.set_num_threads(before)
    failed = [p["name"] for p in report["parts"] if p["status"] == "failed"]
    counts = {s: sum(p["status"] == s for p in report["parts"]) for s in ("passed", "failed", "skipped")}
    print(f"\ndevice check {'FAILED (' + ', '.join(failed) + ')' if failed else 'passed'}: "
          f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped in "
          f"{report['seconds']:.0f} s -> {args.output}", flush=True)
    return 1 if failed else 0


def run_parts(ctx: Check, names: list[str], output: Path, budget_s: float, keep: bool = True) -> dict:
    """Run the parts in order (none starts past the budget); the report is rewritten after each."""
    start = time.perf_counter()
    report = {"ok": None, "device": _describe(ctx.device), "size": ctx.size.name, "precision": ctx.precision,
              "budget_s": budget_s, "data_dir": str(ctx.data_dir) if ctx.data_dir else None,
              "workdir": str(ctx.workdir) if keep else None, "versions": _versions(), "parts": [], "seconds": 0.0}
    print(f"{PROG}: {report['device']} | size {ctx.size.name} | parts {','.join(names)} | budget {budget_s:.0f} s",
          flush=True)
    for name in names:
        if time.perf_counter() > ctx.deadline:
            result = _result(name, "skipped", 0.0, {"reason": f"budget of {budget_s:.0f} s spent"})
        else:
            print(f"\n== {name}", flush=True)
            result = PARTS[name](ctx)
        report["parts"].append(result)
        report["seconds"] = time.perf_counter() - start
        report["ok"] = all(p["status"] != "failed" for p in report["parts"])
        runtime.write_json_atomic(output, report)
        print(f"-- {name}: {result['status']} in {result['seconds']:.1f} s"
              f"{' | ' + result['details']['summary'] if result['details'].get('summary') else ''}", flush=True)
    return report


def _describe(device: torch.device) -> str:
    desc = runtime.device_description(device)
    if device.type == "cuda":
        desc += f"; {torch.cuda.device_count()} GPU(s), CUDA {torch.version.cuda}"
    return desc


def _versions() -> dict:
    import platform

    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - not installed or broken: reported as None
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version()}


def _result(name: str, status: str, seconds: float, details: dict) -> dict:
    return {"name": name, "ok": {"passed": True, "failed": False}.get(status), "status": status,
            "seconds": round(seconds, 3), "details": details}


def part(name: str):
    """A part: ``fn(ctx) -> (ok, details)`` (or raises `Skip`) becomes ``ctx -> {name, ok, status,
    seconds, details}``; an exception is a failure with its traceback's tail."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(ctx: Check) -> dict:
            t = time.perf_counter()
            try:
                ok, details = fn(ctx)
                status = "passed" if ok else "failed"
            except Skip as exc:
                status, details = "skipped", {"reason": str(exc), "summary": f"skipped: {exc}"}
            except Exception as exc:  # noqa: BLE001 - one failing part does not stop the others
                status = "failed"
                details = {"error": f"{type(exc).__name__}: {exc}", "summary": f"{type(exc).__name__}: {exc}"[:300],
                           "traceback": traceback.format_exc()[-4000:]}
            return _result(name, status, time.perf_counter() - t, details)
        run.part_name = name
        return run
    return wrap


# ------------------------------------------------------------------------------ kernel
A = [0.03, 0.6, -0.4, 0.2, -0.05, 0.01]  # tests/test_rational.py's coefficients
B = [-0.3, 0.0, 0.2, -0.02]
# per dtype: (rtol, atol) for y and grad_x, relative bound for the coefficient gradients
TOL = {torch.float32: (3e-6, 3e-6, 2e-5), torch.bfloat16: (4e-3, 1e-3, 2e-5)}


def make_x(n: int, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    """float64 inputs: the special values (0, -0, +-50, tiny, ...) first, then Gaussian."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    special = torch.tensor([0.0, -0.0, 50.0, -50.0, 1e-30, -1.5, 2.75], dtype=torch.float64)
    x[: min(n, 7)] = special[: min(n, 7)]
    return x


def reference(x, a, b, g):
    """y and the three gradients by float64 autograd of the plain formula (CPU)."""
    x, a, b = (t.detach().cpu().double().requires_grad_() for t in (x, a, b))
    babs = b * torch.where(torch.signbit(b), -1.0, 1.0).double()
    p = sum(a[k] * x**k for k in range(a.numel()))
    y = p / (1 + sum(babs[j] * x.abs() ** (j + 1) for j in range(b.numel())))
    y.backward(g.cpu().double())
    return y.detach(), x.grad, a.grad, b.grad


def kernel_errors(backend: str, dtype: torch.dtype, n: int, device) -> dict:
    """Largest errors of `backend` against `reference` (absolute for y / grad_x, relative for the
    coefficient gradients) and whether they are within `TOL`."""
    from raft import rational as R

    x = make_x(n, seed=n).to(dtype)
    g = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    xd = x.to(device).requires_grad_()
    a = torch.tensor(A, device=device, requires_grad=True)
    b = torch.tensor(B, device=device, requires_grad=True)
    y = R.rational(xd, a, b, backend=backend)
    y.backward(g.to(device))
    got = [t.detach().cpu() for t in (y, xd.grad, a.grad, b.grad)]
    fell_back = backend == "compile" and R._COMPILED._failed  # it warned and ran the eager formulas
    ref = reference(x, torch.tensor(A), torch.tensor(B), g)
    rtol, atol, crel = TOL[dtype]
    out = {"backend": backend, "dtype": str(dtype).replace("torch.", ""), "numel": n, "fell_back": fell_back,
           "dtypes_ok": got[0].dtype == got[1].dtype == dtype and got[2].dtype == got[3].dtype == torch.float32}
    ok = out["dtypes_ok"] and not fell_back
    for name, u, r in (("y", got[0], ref[0]), ("grad_x", got[1], ref[1])):
        err = (u.double() - r).abs()
        out[name] = err.max().item()
        ok = ok and bool((err <= atol + rtol * r.abs()).all())
    for name, u, r in (("grad_numerator", got[2], ref[2]), ("grad_denominator", got[3], ref[3])):
        out[name] = ((u.double() - r).abs() / r.abs().clamp_min(1e-3 * r.abs().max())).max().item()
        ok = ok and out[name] < max(crel, 2e-7)
    out["ok"] = bool(ok)
    return out


def _kernel_backends(ctx: Check) -> tuple[list[str], list[str]]:
    """(backends to check, notes): CUDA triton + compile; CPU eager + cpp (when it builds)."""
    if ctx.cuda:
        return ["triton", "compile"], []
    from raft import rational as R

    if R._CPP.module() is not None:
        return ["eager", "cpp"], []
    return ["eager"], [f"cpp kernel unavailable: {R._CPP._error}"]


@part("kernel")
def check_kernel(ctx: Check):
    backends, notes = _kernel_backends(ctx)
    rows = [kernel_errors(b, dt, ctx.size.kernel_numel, ctx.device)
            for b in backends for dt in (torch.float32, torch.bfloat16)]
    bad = [f"{r['backend']}/{r['dtype']}" for r in rows if not r["ok"]]
    for r in rows:
        print(f"{r['backend']:<8} {r['dtype']:<9} y {r['y']:.2e}  grad_x {r['grad_x']:.2e}  "
              f"grad_a (rel) {r['grad_numerator']:.2e}  grad_b (rel) {r['grad_denominator']:.2e}  "
              f"{'ok' if r['ok'] else 'FAIL'}", flush=True)
    summary = f"{len(rows) - len(bad)}/{len(rows)} backend x dtype within tolerance" + (f"; bad: {bad}" if bad else "")
    return not bad, {"rows": rows, "tolerances": {str(k): v for k, v in TOL.items()}, "notes": notes,
                     "summary": summary}


# ------------------------------------------------------------------------------ determinism
@part("determinism")
def check_determinism(ctx: Check):
    from raft import rational as R

    backend = "triton" if ctx.cuda else ("cpp" if R._CPP.module() is not None else None)
    if backend is None:
        raise Skip("no deterministic fused kernel here (CPU without the C++ kernel)")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        n = ctx.size.determinism_numel
        x = make_x(n, seed=6).to(dtype).to(ctx.device).requires_grad_()
        g = torch.randn(n, generator=torch.Generator().manual_seed(7)).to(dtype).to(ctx.device)
        runs = []
        for _ in range(2):
            a = torch.tensor(A, device=ctx.device, requires_grad=True)
            b = torch.tensor(B, device=ctx.device, requires_grad=True)
            x.grad = None
            R.rational(x, a, b, backend=backend).backward(g)
            runs.append((x.grad.clone(), a.grad, b.grad))
        same = [torch.equal(u, v) for u, v in zip(*runs)]
        rows.append({"dtype": str(dtype).replace("torch.", ""), "numel": n, "grad_x": same[0],
                     "grad_numerator": same[1], "grad_denominator": same[2]})
    ok = all(r["grad_x"] and r["grad_numerator"] and r["grad_denominator"] for r in rows)
    return ok, {"backend": backend, "rows": rows,
                "summary": f"{backend}: two backward passes {'bit-identical' if ok else 'DIFFER'}"}


# ------------------------------------------------------------------------------ bench
def _strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "samples_s"}


@part("bench")
def check_bench(ctx: Check):
    from raft import bench
    from raft import rational as R

    backends = list(bench.CUDA_BACKENDS) if ctx.cuda else ["eager"]
    dtypes = bench.kernel_dtypes(ctx.device)
    kernel = bench.kernel_rows(ctx.size.bench_shapes, dtypes, ctx.device, backends, ctx.repeats, 1)
    name = "bert-base" if ctx.size.name == "base" else f"{ctx.size.name}-model"
    models = bench.bench_models(name, ctx.device, backends, repeats=ctx.repeats, seq_len=ctx.size.seq_len,
                                vocab_size=ctx.size.vocab_size, shape=ctx.size.bench_model)
    print(f"\n{name}: raft/bert step ratio "
          + ", ".join(f"{b} {models['ratio'][b]:.3f}" for b in backends)
          + f" ({models['autocast'] or 'fp32'}, {models['attention']} attention, batch {models['batch']})")
    pretraining = bench.pretraining_rows(ctx.device, backends, shape=ctx.size.bench_model,
                                         batch=ctx.size.bench_batch, steps=3, seq_len=ctx.size.seq_len,
                                         vocab_size=ctx.size.vocab_size)
    values = ([r["fwd_ratio"] for r in kernel] + [r["fwd_bwd_ratio"] for r in kernel]
              + list(models["ratio"].values()) + [r["tokens_per_s"] for r in pretraining])
    ok = len(kernel) == len(ctx.size.bench_shapes) * len(dtypes) * len(backends) and all(
        math.isfinite(v) and v > 0 for v in values)
    summary = (f"{len(kernel)} kernel rows; step ratio "
               + ", ".join(f"{b} {models['ratio'][b]:.2f}" for b in backends) + "; tokens/s "
               + ", ".join(f"{r['variant']}{'/' + r['backend'] if r['backend'] else ''} {r['tokens_per_s']:.0f}"
                           for r in pretraining))
    fell_back = "compile" in backends and R._COMPILED._failed  # the "compile" rows would be eager ones
    return ok and not fell_back, {"backends": backends, "compile_fell_back": fell_back,
                                  "kernel": [_strip(r) for r in kernel], "models": _strip(models),
                                  "pretraining": pretraining, "summary": summary}


# ------------------------------------------------------------------------------ subprocesses
def _raft(*args) -> list[str]:
    return [sys.executable, "-m", "raft.cli", *map(str, args)]


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> dict:
    """Run `cmd` to completion, output into `log`: {rc, seconds, log}."""
    t = time.perf_counter()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                check=False).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return {"rc": rc, "seconds": round(time.perf_counter() - t, 2), "log": str(log)}


def run_preempted(cmd: list[str], log: Path, timeout: float, env: dict | None = None,
                  marker: str = "] checkpoint ") -> dict:
    """Run `cmd`, send SIGTERM once its output has a line with `marker` (the first checkpoint),
    and wait: {rc, seconds, signalled, log}."""
    t = time.perf_counter()
    signalled = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None and time.perf_counter() - t < timeout:
                if not signalled and marker in log.read_text(errors="replace"):
                    proc.send_signal(signal.SIGTERM)
                    signalled = True
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    timed_out = time.perf_counter() - t >= timeout and not signalled
    return {"rc": "timeout" if timed_out else rc, "seconds": round(time.perf_counter() - t, 2),
            "signalled": signalled, "log": str(log)}


def _tail(path, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------ corpus and pretraining
def corpus(ctx: Check) -> Path:
    """The pretraining corpus (prepared once): from --data-dir's Wikipedia slice, else synthetic."""
    if "corpus" in ctx.shared:
        return ctx.shared["corpus"]
    out = ctx.workdir / "corpus"
    if ctx.data_dir is None:
        from raft.bench import write_synthetic_corpus

        n_train, n_val = ctx.size.synthetic
        write_synthetic_corpus(out, vocab_size=ctx.size.vocab_size, seq_len=ctx.size.seq_len, n_train=n_train,
                               n_validation=n_val)
    else:
        cmd = _raft("prepare-corpus", "--output", out, "--data-dir", ctx.data_dir, "--max-documents",
                    ctx.size.documents, "--seq-len", ctx.size.seq_len, "--validation-fraction", 0.1)
        res = run_logged(cmd, ctx.workdir / "prepare-corpus.log", ctx.timeout(), ctx.env())
        if res["rc"] != 0:
            raise RuntimeError(f"raft prepare-corpus exited {res['rc']}:\n{_tail(res['log'])}")
    ctx.shared["corpus"] = out
    return out


def pretrain_cmd(ctx: Check, variant: str, out: Path, *extra, launcher=None) -> list[str]:
    s = ctx.size
    layers, hidden, heads, ffn = s.model
    args = ["pretrain", "--corpus", corpus(ctx), "--output", out, "--variant", variant, "--precision", ctx.precision,
            "--device", ctx.device.type, "--num-layers", layers, "--hidden-size", hidden, "--num-heads", heads,
            "--intermediate-size", ffn, "--dropout", 0, "--max-steps", s.steps, "--batch-size", s.batch,
            "--save-steps", s.save_steps, "--eval-steps", 0, "--logging-steps", max(1, s.save_steps // 2),
            "--snapshot-steps", 0, "--keep-checkpoints", 1, "--max-eval-sequences", 256, "--lr", 5e-4,
            "--warmup-ratio", 0.1, "--seed", 0, *extra]
    return _raft(*args) if launcher is None else [*launcher, "-m", "raft.cli", *map(str, args)]


def _steady_tokens_per_s(out: Path) -> float | None:
    """Median tokens/s of the logged intervals (progress.jsonl; compile time and eval mostly excluded)."""
    path = out / "checkpoints" / "progress.jsonl"
    values = [r.get("tokens_per_s") for r in map(json.loads, path.read_text().splitlines())] if path.is_file() else []
    values = [v for v in values if v]
    return statistics.median(values) if values else None


def preempt_and_resume(ctx: Check, variant: str, out: Path, *extra) -> dict:
    """`raft pretrain`: SIGTERM after the first checkpoint (exit 75), then the same command again
    (exit 0, resumed, all steps). The outcome and the run's numbers."""
    first = run_preempted(pretrain_cmd(ctx, variant, out, *extra), out.with_suffix(".1.log"), ctx.timeout(), ctx.env())
    second = run_logged(pretrain_cmd(ctx, variant, out, *extra), out.with_suffix(".2.log"), ctx.timeout(), ctx.env())
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    resumed = metrics.get("resumed_from_steps") or []
    problems = []
    if first["rc"] != PREEMPTED:
        problems.append(f"first attempt exited {first['rc']} (expected {PREEMPTED}"
                        f"{'' if first['signalled'] else ', no checkpoint line seen'})")
    if second["rc"] != 0:
        problems.append(f"second attempt exited {second['rc']}")
    if metrics.get("steps") != ctx.size.steps or len(resumed) != 1 or not 0 < resumed[0] < ctx.size.steps:
        problems.append(f"steps {metrics.get('steps')} (expected {ctx.size.steps}), resumed from {resumed}")
    for res in (first, second):
        if res["rc"] not in (0, PREEMPTED):
            problems.append(f"{res['log']}:\n{_tail(res['log'])}")
    return {"variant": variant, "ok": not problems, "problems": problems, "attempts": [first, second],
            "steps": metrics.get("steps"), "resumed_from_steps": resumed, "eval_loss": metrics.get("eval_loss"),
            "precision": metrics.get("precision"), "device": metrics.get("device"),
            "tokens_per_s": metrics.get("tokens_per_s"), "steady_tokens_per_s": _steady_tokens_per_s(out),
            "output": str(out)}


@part("pretrain")
def check_pretrain(ctx: Check):
    runs = {}
    for variant in ("bert", "raft"):
        runs[variant] = preempt_and_resume(ctx, variant, ctx.workdir / f"pretrain-{variant}")
        r = runs[variant]
        print(f"{variant}: exits {[a['rc'] for a in r['attempts']]}, steps {r['steps']} resumed from "
              f"{r['resumed_from_steps']}, eval loss {r['eval_loss']}, tokens/s {r['steady_tokens_per_s']}"
              + ("" if r["ok"] else f" | {'; '.join(r['problems'])}"), flush=True)
    ctx.shared["pretrain"] = runs
    if runs["raft"]["ok"]:
        ctx.shared["raft_model"] = Path(runs["raft"]["output"]) / "model"
    c = corpus(ctx)
    stats = json.loads((c / "stats.json").read_text())
    summary = "; ".join(f"{v}: {'ok' if r['ok'] else 'FAIL'}, resumed from {r['resumed_from_steps']}, "
                        f"{r['steady_tokens_per_s'] or 0:.0f} tokens/s" for v, r in runs.items())
    return all(r["ok"] for r in runs.values()), {
        "runs": runs, "corpus": {"path": str(c), "source": stats.get("source")}, "size": ctx.size.name,
        "summary": summary}


# ------------------------------------------------------------------------------ ddp
@part("ddp")
def check_ddp(ctx: Check):
    gpus = torch.cuda.device_count() if ctx.cuda else 0
    if gpus < 2:
        raise Skip(f"needs two GPUs ({gpus} here); tests/test_pretrain_ddp.py runs 2 processes (gloo) on the CPU")
    out = ctx.workdir / "pretrain-ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = pretrain_cmd(ctx, "raft", out, "--save-steps", 0, "--max-steps", 20, launcher=launcher)
    res = run_logged(cmd, ctx.workdir / "pretrain-ddp.log", ctx.timeout(), ctx.env())
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    ok = res["rc"] == 0 and metrics.get("steps") == 20 and metrics.get("world_size") == 2
    details = {"run": res, "steps": metrics.get("steps"), "world_size": metrics.get("world_size"),
               "eval_loss": metrics.get("eval_loss"), "tokens_per_s": _steady_tokens_per_s(out),
               "summary": f"2 processes: exit {res['rc']}, steps {metrics.get('steps')}"}
    if not ok:
        details["log_tail"] = _tail(res["log"], 30)
    return ok, details


# ------------------------------------------------------------------------------ fine-tuning
def _pretrained_raft(ctx: Check) -> tuple[Path, str]:
    """The pretrain part's raft model, else an untrained stand-in with the BERT vocabulary."""
    if "raft_model" in ctx.shared:
        return ctx.shared["raft_model"], "the pretrain part's raft model"
    from raft.data.sources import bert_tokenizer_from_vocab
    from raft.modeling import RaftForMaskedLM, make_config

    tokenizer = bert_tokenizer_from_vocab(ctx.data_dir / "vocab" / "bert-base-uncased-vocab.txt")
    layers, hidden, heads, ffn = ctx.size.model
    torch.manual_seed(0)
    model = RaftForMaskedLM(make_config("raft", vocab_size=len(tokenizer), num_hidden_layers=layers,
                                        hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn,
                                        max_position_embeddings=512))
    out = ctx.workdir / "untrained-raft"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, "an untrained raft model (the pretrain part did not run or failed)"


def finetune(ctx: Check, name: str, *extra) -> dict:
    """`raft finetune-glue` RTE N=100, one epoch: {run, metrics summary, ok, problems}."""
    model, origin = _pretrained_raft(ctx)
    out = ctx.workdir / name / "metrics.json"
    cmd = _raft("finetune-glue", "--pretrained", model, "--task", "rte", "--n", 100, "--seed", 2022, "--output", out,
                "--data-dir", ctx.data_dir, "--epochs", 1, "--patience", 1, "--precision", ctx.precision,
                "--device", ctx.device.type, "--batch-size", ctx.size.finetune_batch,
                "--max-seq-length", ctx.size.seq_len, *extra,
                *(["--max-test-examples", ctx.size.max_test_examples] if ctx.size.max_test_examples else []))
    res = run_logged(cmd, ctx.workdir / f"{name}.log", ctx.timeout(), ctx.env())
    m = json.loads(out.read_text()) if out.is_file() else {}
    problems = [] if res["rc"] == 0 else [f"exit {res['rc']}:\n{_tail(res['log'], 30)}"]
    if m and (m.get("epochs_run") != 1 or m["hyperparameters"].get("precision") != ctx.precision
              or m["sizes"].get("train") != 100 or not m.get("test")):
        problems.append(f"unexpected record: epochs_run {m.get('epochs_run')}, sizes {m.get('sizes')}, "
                        f"precision {m['hyperparameters'].get('precision')}")
    accuracy = (m.get("test") or {}).get("test", {}).get("accuracy")
    return {"ok": not problems and bool(m), "problems": problems or ([] if m else ["no metrics.json"]),
            "run": res, "pretrained": origin,
            "accuracy": accuracy, "best_dev_score": m.get("best_dev_score"), "device": m.get("device"),
            "train_s": (m.get("timings_s") or {}).get("train")}


@part("finetune")
def check_finetune(ctx: Check):
    if ctx.data_dir is None:
        raise Skip("needs --data-dir (GLUE RTE is read from local files)")
    r = finetune(ctx, "finetune-rte")
    print(f"RTE n=100, 1 epoch ({ctx.precision}, {r['pretrained']}): exit {r['run']['rc']}, "
          f"test accuracy {r['accuracy']}" + ("" if r["ok"] else f" | {'; '.join(r['problems'])}"), flush=True)
    return r["ok"], {**r, "summary": f"RTE exit {r['run']['rc']}, test accuracy {r['accuracy']}"}


# ------------------------------------------------------------------------------ compile
@part("compile")
def check_compile(ctx: Check):
    if not ctx.cuda:
        raise Skip("CUDA only here (compiling on the CPU takes minutes; tests/test_compile.py covers --compile)")
    if ctx.deadline - time.perf_counter() < 120:
        raise Skip("under 120 s of the budget left (two compiled BERT-base attempts need about that)")
    r = preempt_and_resume(ctx, "raft", ctx.workdir / "pretrain-raft-compiled", "--compile")
    eager = (ctx.shared.get("pretrain") or {}).get("raft") or {}
    details = {"pretrain": r, "eager_eval_loss": eager.get("eval_loss"),
               "eager_steady_tokens_per_s": eager.get("steady_tokens_per_s")}
    ok = r["ok"]
    if r["eval_loss"] is not None and eager.get("eval_loss") is not None:  # the same run, dropout 0, bf16
        details["eval_loss_rel_diff"] = abs(r["eval_loss"] - eager["eval_loss"]) / abs(eager["eval_loss"])
        ok = ok and details["eval_loss_rel_diff"] < 0.05
    if r["steady_tokens_per_s"] and eager.get("steady_tokens_per_s"):
        details["speedup"] = r["steady_tokens_per_s"] / eager["steady_tokens_per_s"]
    if ctx.data_dir is not None and ctx.deadline - time.perf_counter() > 150:
        details["finetune"] = finetune(ctx, "finetune-rte-compiled", "--compile")
        ok = ok and details["finetune"]["ok"]
    else:
        details["finetune"] = "not run (no --data-dir, or under 150 s of the budget left)"
    print(f"compiled raft pretraining: exits {[a['rc'] for a in r['attempts']]}, eval loss {r['eval_loss']} "
          f"(eager {eager.get('eval_loss')}), speedup {details.get('speedup')}", flush=True)
    details["summary"] = (f"pretrain --compile {'ok' if r['ok'] else 'FAIL'}, eval loss diff "
                          f"{details.get('eval_loss_rel_diff')}, speedup {details.get('speedup')}")
    return ok, details


PARTS = {"kernel": check_kernel, "determinism": check_determinism, "bench": check_bench, "pretrain": check_pretrain,
         "ddp": check_ddp, "finetune": check_finetune, "compile": check_compile}
