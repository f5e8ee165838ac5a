"""Installed like a library: recipes and configs ship in the package, a user's folder comes first."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from distill.config import available_recipes, group_options, load_config
from distill.errors import ConfigError
from distill.runner import take_recipes_option

ROOT = Path(__file__).resolve().parents[1]
# small enough for a test, still every stage of `distill run`
SMALL = ["data.demo.sizes.seed=48", "data.demo.sizes.corpus=24", "data.demo.sizes.gold=24", "train.max_steps=4"]


def run(*args, **kw):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_the_wheel_runs_the_demo_from_an_empty_folder(tmp_path):
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", ROOT)
    wheel, = (tmp_path / "dist").glob("distill-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"distill/recipes/demo.yaml", "distill/configs/student/tiny_t5.yaml", "distill/configs/prices.yaml",
            "distill/configs/accelerate/multi_gpu.yaml"} <= set(names)

    # a fresh environment that sees this machine's torch and other libraries, and the wheel's distill only
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISTILL_RECIPES")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = run(venv / "bin" / "python", "-c", "import distill; print(distill.__file__)", cwd=empty, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout's copy

    run(venv / "bin" / "distill", "run", "recipe=demo", *SMALL, cwd=empty, env=env)
    labels = pd.read_parquet(empty / "runs" / "demo" / "labels" / "corpus.parquet")
    assert len(labels) == 24 and labels["id"].is_unique
    assert labels["label"].isin(["sports", "business", "science", "weather"]).all()
    assert (empty / "runs" / "demo" / "monitor" / "metrics.json").exists()


def test_a_users_recipe_folder_comes_first_and_may_add_config_options(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "student").mkdir(parents=True)
    demo = available_recipes()["demo"].read_text()
    (mine / "demo.yaml").write_text(demo.replace("seed: 42", "seed: 7"))  # hides the shipped demo
    (mine / "news.yaml").write_text(demo.replace("student: tiny_t5", "student: my_t5"))
    shipped = (Path(available_recipes()["demo"]).parents[1] / "configs" / "student" / "tiny_t5.yaml").read_text()
    (mine / "student" / "my_t5.yaml").write_text(shipped.replace("r: 16,", "r: 2,"))
    monkeypatch.setenv("DISTILL_RECIPES", str(mine))

    assert available_recipes()["demo"] == mine / "demo.yaml" and load_config(["recipe=demo"]).seed == 7
    assert "my_t5" in group_options("student") and "tiny_t5" in group_options("student")
    cfg = load_config(["recipe=news"])  # a recipe of the user's, on a student config of the user's
    assert cfg.recipe == "news" and cfg.student.lora.r == 2
    assert load_config(["recipe=topic", "student=my_t5"]).student.lora.r == 2  # a shipped recipe, too

    monkeypatch.delenv("DISTILL_RECIPES")
    assert available_recipes()["demo"] != mine / "demo.yaml" and "news" not in available_recipes()


def test_the_recipes_option_is_searched_first_and_a_missing_folder_is_refused(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "news.yaml").write_text(available_recipes()["demo"].read_text().replace(
        "# The built-in demo", "# My news topics"))
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_RECIPES"}
    listed = run("distill", "recipes", "--recipes", mine, env=env).stdout
    assert "My news topics" in listed and str(mine / "news.yaml") in listed and "demo" in listed
    missing = subprocess.run(["distill", "recipes", "--recipes", tmp_path / "nowhere"],
                             capture_output=True, text=True, env=env)
    assert (missing.returncode, missing.stderr) == (2, f"distill: error: --recipes {tmp_path / 'nowhere'}: no such folder\n")

    # a stage takes it anywhere among its arguments, and the processes it starts see the folder too
    monkeypatch.setenv("DISTILL_RECIPES", "")
    rest = take_recipes_option(["recipe=news", f"--recipes={mine}", "train.epochs=1"])
    assert rest == ["recipe=news", "train.epochs=1"] and os.environ["DISTILL_RECIPES"] == str(mine)
    assert load_config(rest).recipe == "news"
    monkeypatch.setenv("DISTILL_RECIPES", "")
    with pytest.raises(ConfigError, match="unknown recipe 'news'"):
        load_config(["recipe=news"])
