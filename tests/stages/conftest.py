"""A finished ``bench run`` of the smoke preset, made once per session, and copies of it."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from smokerun import invoke, run_args


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The finished smoke run (read-only: copy it with ``smoke_copy`` before changing it)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    return run_dir, invoke(*run_args(run_dir)).output


@pytest.fixture
def smoke_copy(smoke_run) -> Path:
    """A private copy of the finished smoke run, beside it (so its data path still holds)."""
    run_dir, _ = smoke_run
    copy = run_dir.parent / f"copy-{uuid.uuid4().hex[:8]}"
    shutil.copytree(run_dir, copy)
    return copy
