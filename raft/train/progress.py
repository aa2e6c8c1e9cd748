"""Progress reporting shared by the training commands.

`Progress(total, jsonl_path, log_every)` shows a tqdm bar (step, metrics, ETA) when stderr is
a terminal, and otherwise -- or when ``TQDM_DISABLE=1`` -- prints one plain line per logging
interval (no carriage returns), e.g.::

    [pretrain] step 200/1000 (20.0%) | loss 6.8123 | lr 7.00e-04 | tokens/s 41250 | elapsed 0:01:10 | eta 0:04:40

Each logging interval also appends one JSON line to `jsonl_path` (if given): ``{"step",
<metrics>, "elapsed_s", "eta_s"}``, so a run can be followed with ``tail -f``. Only one
process (rank 0) should report; pass ``enabled=False`` elsewhere.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def tqdm_disabled() -> bool:
    value = os.environ.get("TQDM_DISABLE", "").strip().lower()
    return value not in ("", "0", "false", "no")


def use_bar(stream=None) -> bool:
    """A tqdm bar only for an interactive terminal with tqdm not disabled."""
    stream = sys.stderr if stream is None else stream
    return not tqdm_disabled() and hasattr(stream, "isatty") and stream.isatty()


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_value(key: str, value) -> str:
    if isinstance(value, float):
        if key in ("lr",) or (value != 0 and abs(value) < 1e-3):
            return f"{value:.2e}"
        if "per_s" in key or abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.4f}"
    return str(value)


def truncate_jsonl(path, max_step: int, key: str = "step") -> None:
    """Drop the lines of a JSONL log whose `key` exceeds `max_step` (used when a run resumes)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get(key, 0) <= max_step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError):
            continue  # a torn last line from a killed process
    path.write_text("".join(f"{line}\n" for line in kept))


class Progress:
    """Progress over `total` steps, starting at `initial` (a resumed run)."""

    def __init__(self, total: int, jsonl_path=None, log_every: int = 50, *, initial: int = 0,
                 desc: str = "train", enabled: bool = True, stream=None):
        self.total, self.log_every, self.desc, self.enabled = int(total), max(1, int(log_every)), desc, enabled
        self.stream = sys.stderr if stream is None else stream
        self.initial = self.step_ = int(initial)
        self.start = time.perf_counter()
        self.jsonl_path = Path(jsonl_path) if jsonl_path and enabled else None
        if self.jsonl_path:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        self.bar = None
        if enabled and use_bar(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, desc=desc, unit="step",
                            dynamic_ncols=True, file=self.stream)

    def due(self, step: int) -> bool:
        """True when `step` is a logging step (every `log_every` steps, and the last step)."""
        return step % self.log_every == 0 or step == self.total

    def eta(self, step: int) -> float | None:
        done = step - self.initial
        if done <= 0:
            return None
        return (time.perf_counter() - self.start) / done * max(0, self.total - step)

    def update(self, step: int, **metrics) -> dict | None:
        """Advance to `step`; with metrics, report them (bar postfix, a log line, a JSON line)."""
        if not self.enabled:
            self.step_ = step
            return None
        if self.bar is not None:
            self.bar.update(step - self.step_)
        self.step_ = step
        if not metrics:
            return None
        elapsed, eta = time.perf_counter() - self.start, self.eta(step)
        record = {"step": step, **metrics, "elapsed_s": round(elapsed, 3),
                  "eta_s": None if eta is None else round(eta, 1)}
        if self.jsonl_path:
            with self.jsonl_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        shown = " | ".join(f"{k.replace('_per_s', '/s')} {_format_value(k, v)}" for k, v in metrics.items()
                           if v is not None)
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=True)
        else:
            pct = 100.0 * step / self.total if self.total else 100.0
            self.write(f"step {step}/{self.total} ({pct:.1f}%) | {shown} | "
                       f"elapsed {format_duration(elapsed)} | eta {format_duration(eta)}")
        return record

    def write(self, message: str) -> None:
        """A plain message line (through tqdm when a bar is shown, so the bar is not broken)."""
        if not self.enabled:
            return
        line = f"[{self.desc}] {message}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
