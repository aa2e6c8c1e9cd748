"""Shared fixtures. Tests read the local data copy at ../shared/data (or $RAFT_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_data_dir() -> Path | None:
    env = os.environ.get("RAFT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "glue").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _find_data_dir()
    if d is None:
        pytest.skip("no local data folder (set RAFT_DATA_DIR or provide ../shared/data)")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
