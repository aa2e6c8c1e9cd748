"""One runtime for every training command: device, precision, autocast, grad scaler,
seeding, processes (DDP rank / world / reductions), atomic JSON writes and exit codes.

A command's ``main`` is ``run_command(prog, fn, args)``: a `UsageError` -- a bad setting or input,
an unreadable weights file (`reading_weights`), a full disk (`DiskFullError`: `disk_full_names`
around a write; `write_text_atomic` has it) -- is one line ``<prog>: error: <message>``, exit 2.

`raft pretrain`, `raft finetune-glue` / `finetune-squad` and `raft bench` all resolve their
device and precision here, so ``precision: auto`` means the same everywhere: bf16 on a CUDA
device that supports it, else fp16 (with a grad scaler); on the CPU bf16 where it has native
bf16 matrix units (AVX512-BF16 or AMX), else fp32.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import random
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from raft import checks

EXIT_USAGE = 2  # a problem found before any training (argparse's code too)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written on a signal; run the same command again


class UsageError(Exception):
    """A problem the user fixes (a setting, an input file, mostly found before any training; a
    full disk): printed as ``<prog>: error: <message>``, exit 2."""


class DiskFullError(UsageError):
    """No space left on the device a file was written to (``OSError`` ENOSPC): ``no space left on
    device writing <path> (<free> free on <mount point>)``. Raised by `disk_full_names`."""

    def __init__(self, path):
        self.path = Path(path)
        super().__init__(disk_full_message(path))


def run_command(prog: str, fn, args) -> int:
    """Call ``fn(args)``; a `UsageError` (a `DiskFullError` too) becomes ``<prog>: error: <message>``
    and exit code 2, and so does any other "no space left on device" (named by its file, when the
    error has one)."""
    try:
        return int(fn(args) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        where = exc.filename2 or exc.filename  # shutil.copyfile: filename2 is the destination
        print(f"{prog}: error: {disk_full_message(where) if where else f'no space left on device: {exc}'}",
              file=sys.stderr)
        return EXIT_USAGE


@contextlib.contextmanager
def reading_weights(path, prefix: str = "", remedy: str = "copy it again or re-run the command that saved it"):
    """Around reading a safetensors file: its `SafetensorError` (a truncated or corrupt file; the
    message names no file) becomes a `UsageError` naming ``path``, after ``prefix`` (a flag: "--pretrained: ")."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        raise UsageError(f"{prefix}cannot read the model weights {path}: {exc} (the file is truncated or "
                         f"corrupt; {remedy})") from exc


def check_weights(files, prefix: str = "", remedy: str = "copy it again or re-run the command that saved it") -> None:
    """Each ``*.safetensors`` of ``files`` opens (its header against its size; the tensors are not
    read): a truncated or corrupt one is a `UsageError` naming it (`reading_weights`), before a
    model loader fails on it without saying which file."""
    from safetensors import safe_open

    for f in files:
        if str(f).endswith(".safetensors"):
            with reading_weights(f, prefix, remedy), safe_open(f, framework="pt"):
                pass


def check(rule, *args):
    """Run a `raft.checks` rule; its error becomes a `UsageError` naming the flag."""
    try:
        return rule(*args)
    except checks.SettingError as exc:
        raise UsageError(exc.as_flag()) from None


# ------------------------------------------------------------------------------ device
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_num_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(int(num_threads))


def select_device(name: str | None = None, local_rank: int = 0) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1"; None or "auto": CUDA when present, else the CPU).

    "cuda" and "auto" mean GPU ``local_rank`` (one process per GPU under torchrun)."""
    if name and name != "auto":
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available")
        if dev.type == "cuda" and dev.index is None:  # "cuda": this process's GPU (torchrun's LOCAL_RANK)
            dev = torch.device("cuda", local_rank)
        return dev
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX tiles). On such a
    2-core machine the quick study's pretraining steps run 1.3-1.5x faster in bf16 autocast than
    in fp32 with two jobs in parallel, and up to 2.8x with one job at sequence length 64."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def check_compile(device: torch.device) -> None:
    """`--compile` on the CPU: torch.compile (Inductor) builds C++ with the system compiler. Refused
    up front, before any data work, where none is found (else the first training step fails)."""
    if device.type != "cpu":
        return
    from torch._inductor import cpp_builder, exc

    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise UsageError("--compile (the config's compile: true) on the CPU needs a C++ compiler for "
                         "torch.compile, and none was found: install g++ or clang++ (or set CXX), or turn "
                         "compile off") from None


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Concrete precision ("fp32", "bf16" or "fp16") for ``precision`` on ``device``.

    "auto" (or None): bf16 on a CUDA device that supports it, else fp16; on the CPU bf16 where
    `cpu_has_native_bf16()`, else fp32 (without bf16 units, CPU bf16 autocast is slower than
    fp32). fp16 needs a CUDA device.
    """
    precision = precision or "auto"
    if precision not in checks.PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; expected one of {checks.PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    check(checks.check_precision, precision, device.type)
    return precision


def device_description(device: torch.device, precision: str | None = None, world: int = 1) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        desc = f"cuda ({torch.cuda.get_device_name(idx)})"
    else:
        desc = f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"
    if world > 1:
        desc += f" x{world}"
    return f"{desc}, {precision}" if precision else desc


@dataclass
class Runtime:
    """Where and how a model runs: device, resolved precision, grad scaler (fp16 only)."""

    device: torch.device
    precision: str = "fp32"  # resolved: fp32 | bf16 | fp16
    scaler: object | None = field(default=None, repr=False)

    @classmethod
    def create(cls, device: torch.device, precision: str | None) -> Runtime:
        resolved = resolve_precision(precision, device)
        if device.type == "cuda":  # TF32 matmuls (fp32 master weights keep their precision)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        scaler = torch.amp.GradScaler(device.type) if resolved == "fp16" else None
        return cls(device=device, precision=resolved, scaler=scaler)

    def autocast(self):
        return autocast(self.device, self.precision)

    def describe(self, world: int = 1) -> str:
        return device_description(self.device, self.precision, world)


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------ processes
class Dist:
    """Rank / world of this process (torchrun's environment) and the reductions training needs."""

    def __init__(self, device_name: str | None = "auto"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = select_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.initialized_here = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.initialized_here = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum(float(flag))[0] > 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ files
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _size(n: float) -> str:
    """Bytes in words: 0 B, 512 B, 1.5 MiB, 12.3 GiB."""
    units, i = ("B", "KiB", "MiB", "GiB", "TiB", "PiB"), 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def mount_point(path) -> Path:
    """The mount point of the file system holding ``path`` (the nearest existing folder above it)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def disk_full_message(path) -> str:
    """``no space left on device writing <path> (<free> free on <mount point>)``: the free space
    now (a partial file already removed), as the user (df's "Avail")."""
    mount = mount_point(path)
    try:
        free = f"{_size(free_space(mount))} free"
    except OSError:
        free = "free space unknown"
    return f"no space left on device writing {path} ({free} on {mount})"


def free_space(folder) -> int:
    """Bytes free to this user on the file system of ``folder``."""
    return shutil.disk_usage(folder).free


@contextlib.contextmanager
def disk_full_names(path):
    """Around a write of ``path`` (a file, or a folder being filled): "no space left on device"
    (``OSError`` ENOSPC) becomes a `DiskFullError` naming ``path`` and the free space left, which
    `run_command` prints as one line with exit code 2. Leave nothing half-written behind: clean up
    inside, so the free space is measured after it."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise DiskFullError(path) from exc


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file + fsync + rename: a reader (or a rerun after
    a crash) sees the old file or the new one, never a torn one. The file gets the usual
    permissions (umask), not a temporary file's 0600. A full disk is a `DiskFullError` naming
    ``path``, the temporary file removed and the old file (if any) untouched."""
    path = Path(path)
    with disk_full_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        f = open(tmp, "x", encoding="utf-8")  # noqa: SIM115 - closed below; "x": never someone else's file
        try:
            with f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return path


def write_json_atomic(path, obj, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (`write_text_atomic`)."""
    return write_text_atomic(path, json.dumps(_jsonable(obj), indent=indent, allow_nan=True) + "\n")
