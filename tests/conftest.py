import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from distill.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def make_cfg(tmp_path):
    """Compose a recipe with its run directory under tmp_path."""

    def make(recipe: str = "demo", *overrides: str, run: str = "run"):
        return load_config([f"recipe={recipe}", f"run_dir={tmp_path / run}", *overrides])

    return make


@pytest.fixture
def billed(monkeypatch):
    """The chat completions each simulated teacher billed, one entry per simulator as it stops."""
    from distill.teacher import Simulator

    counts, stop = [], Simulator.stop
    monkeypatch.setattr(Simulator, "stop", lambda self: (counts.append(self.billed), stop(self)))
    return counts


def record_training(monkeypatch, module) -> list[str]:
    """The folders (round1, ...) whose student `module.fit` trains, in order (it still trains)."""
    real, names = module.fit, []

    def fit(cfg, rows, student_dir, *args, **kw):
        names.append(Path(student_dir).parent.name)
        return real(cfg, rows, student_dir, *args, **kw)

    monkeypatch.setattr(module, "fit", fit)
    return names


def same(before: torch.Tensor, now: torch.Tensor) -> bool:
    """Equal, compared on the device the weight lives on now (the trainer moves the model)."""
    return torch.equal(before.to(now.device), now)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`distill run recipe=demo` through the real CLI, once per session: (run_dir, its output)."""
    run_dir = tmp_path_factory.mktemp("demo") / "demo"
    proc = subprocess.run(["distill", "run", "recipe=demo", f"run_dir={run_dir}"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the run succeeds whatever the monitor says
    return run_dir, proc


@pytest.fixture
def demo_copy(demo_run, tmp_path):
    """A copy of the session's demo run that a test may change."""
    run_dir = tmp_path / "demo"
    shutil.copytree(demo_run[0], run_dir)
    return run_dir


@pytest.fixture(scope="module")
def topic_rows(tmp_path_factory):
    """The demo's task and its seed pool: tiny students train on these rows."""
    from distill.data import load_split, prepare_data
    from distill.tasks import build_task

    cfg = load_config(["recipe=demo", f"run_dir={tmp_path_factory.mktemp('s')}"])
    prepare_data(cfg)
    task = build_task(cfg.task)
    return task, list(load_split(cfg, "seed", task))
