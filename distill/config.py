"""Recipe loading with Hydra's compose API.

`recipe=NAME` picks `recipes/NAME.yaml`, which composes groups from `configs/`. Every other
`key=value` overrides a key, `group=option` swaps a config group. Unknown keys, groups and recipes
are errors that list the valid choices. The run directory is derived from the config alone, so
every rank of a multi-process launch agrees on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from distill.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("teacher", "student", "train", "monitor", "label", "audit")


def recipes_dir() -> Path:
    return Path(os.environ.get("DISTILL_RECIPES", ROOT / "recipes")).resolve()


def configs_dir() -> Path:
    return Path(os.environ.get("DISTILL_CONFIGS", ROOT / "configs")).resolve()


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (configs_dir() / group).glob("*.yaml"))


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, path + ".") if isinstance(v, DictConfig) and len(v) else [path]
    return keys


def _compose(recipe: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base=None):
        return compose(recipe, overrides=[f"hydra.searchpath=[file://{configs_dir()}]", *overrides])


def _check_overrides(recipe: str, overrides: list[str]) -> None:
    """Reject unknown keys before Hydra does, with the list of valid ones."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"argument {item!r} is not key=value")
        key, value = item.split("=", 1)
        if key in GROUPS and value not in group_options(key):
            raise ConfigError(f"unknown {key} config {value!r}; choose one of: {', '.join(group_options(key))}")
    base = _compose(recipe, [f"+recipe={recipe}", *(o for o in overrides if o.split("=", 1)[0] in GROUPS)])
    valid = _leaf_keys(base)
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in GROUPS or key in valid or any(v.startswith(key + ".") for v in valid):
            continue
        parent = key.rpartition(".")[0]
        siblings = [v for v in valid if parent and v.startswith(parent + ".")] or valid
        raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(siblings)}")


def load_config(args: list[str]) -> DictConfig:
    """Compose the recipe named by `recipe=NAME` plus overrides into one resolved config."""
    recipe = next((a.split("=", 1)[1] for a in args if a.startswith("recipe=")), None)
    if recipe is None:
        raise ConfigError(f"missing recipe=NAME; available recipes: {', '.join(available_recipes())}")
    if recipe not in available_recipes():
        raise ConfigError(f"unknown recipe {recipe!r}; available recipes: {', '.join(available_recipes())}")
    overrides = [a for a in args if not a.startswith("recipe=")]
    _check_overrides(recipe, overrides)
    try:
        cfg = _compose(recipe, [f"+recipe={recipe}", *overrides])
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    OmegaConf.resolve(cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    OmegaConf.save(cfg, path)
    return path


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run_dir)
