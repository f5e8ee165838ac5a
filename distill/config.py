"""Recipe loading with Hydra's compose API.

`recipe=NAME` picks `NAME.yaml` from the user's recipe folders (`--recipes DIR` or
`DISTILL_RECIPES`, searched first) or from the recipes that ship in the package
(`distill/recipes/`); a recipe composes groups from `GROUP/OPTION.yaml` in those folders and in
`distill/configs/`. Every other `key=value` overrides a key, `group=option` swaps a config group.
Unknown keys, groups and recipes are errors that list the valid choices. The run directory is
derived from the config alone, so every rank of a multi-process launch agrees on it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from distill import schema
from distill.errors import ConfigError
from distill.schema import SPLITS

PACKAGE = Path(__file__).resolve().parent
GROUPS = ("teacher", "student", "train", "monitor", "label", "audit", "grow", "refine")
OPEN = ("teacher.sim.confusions", "teacher.sim.key_faults")  # label or key names: any may be added
# every key a data split takes, whichever of them its recipe lists (docs/recipes.md, "Your data")
SPLIT_KEYS = {"path": None, "format": None, "text_column": "text", "tokens_column": "tokens",
              "label_column": None, "id_column": None, "limit": None, "slice": None,
              "column_names": None, "token_index": 0, "tag_index": -1,
              "max_chars": 1_000_000}  # a longer row is refused: no teacher or student takes it


def user_dirs() -> list[Path]:
    """The user's own recipe folders, searched before the package's: `--recipes DIR` (the CLI puts
    it in front of DISTILL_RECIPES) and DISTILL_RECIPES, a list like PATH. A folder holds recipes
    (`NAME.yaml`) and may hold config groups of its own (`student/NAME.yaml`, ...)."""
    return [Path(p).expanduser().resolve() for p in os.environ.get("DISTILL_RECIPES", "").split(os.pathsep) if p]


def recipe_dirs() -> list[Path]:
    return [*user_dirs(), PACKAGE / "recipes"]


def config_dirs() -> list[Path]:
    return [*user_dirs(), PACKAGE / "configs"]


def _first(dirs: list[Path], pattern: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in dirs:
        for p in sorted(d.glob(pattern)):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def available_recipes() -> dict[str, Path]:
    """Each recipe name and the file it comes from (a user's folder hides a shipped recipe)."""
    return _first(recipe_dirs(), "*.yaml")


def group_files(group: str) -> dict[str, Path]:
    """Each option of a config group and the file it comes from."""
    return _first(config_dirs(), f"{group}/*.yaml")


def group_options(group: str) -> list[str]:
    return list(group_files(group))


def config_file(name: str) -> Path:
    """A top-level file of the configs (prices.yaml), a user's folder first."""
    return next((d / name for d in config_dirs() if (d / name).is_file()), PACKAGE / "configs" / name)


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        path = f"{prefix}{k}"
        keys += _leaf_keys(v, path + ".") if isinstance(v, DictConfig) and len(v) else [path]
    return keys


def _compose(path: Path, overrides: list[str]) -> DictConfig:
    # the recipe's own folder is Hydra's primary one, so its groups win; then the user's, then ours
    home, recipe = path.parent, path.stem
    search = ",".join(repr(f"file://{d}") for d in config_dirs() if d != home)
    with initialize_config_dir(config_dir=str(home), version_base=None):
        return compose(recipe, overrides=[f"hydra.searchpath=[{search}]", *overrides])


def _is_open(base: DictConfig, key: str) -> bool:
    """Under a mapping meant to take any key (OPEN, or one the config leaves empty)."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        node = OmegaConf.select(base, ".".join(parts[:i]))
        if ".".join(parts[:i]) in OPEN or isinstance(node, DictConfig) and len(node) == 0:
            return True
    return False


def _check_overrides(path: Path, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """Reject unknown keys before Hydra does, with the list of valid ones; return the recipe with
    its group choices and the overrides in the form Hydra takes (`++key` adds a documented key the
    recipe does not list)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"argument {item!r} is not key=value")
        key, value = item.split("=", 1)
        if key in GROUPS and value not in group_options(key):
            raise ConfigError(f"unknown {key} config {value!r}; choose one of: {', '.join(group_options(key))}")
    base = _compose(path, [f"+recipe={path.stem}", *(o for o in overrides if o.split("=", 1)[0] in GROUPS)])
    present = _leaf_keys(base)
    valid = present + [k for split in SPLITS if OmegaConf.select(base, f"data.{split}") is not None
                       for k in (f"data.{split}.{name}" for name in SPLIT_KEYS) if k not in present]
    out = []
    for item in overrides:
        raw, value = item.split("=", 1)
        key = raw.lstrip("+~")
        if key in GROUPS or raw.startswith("~"):
            out.append(item)
        elif key in present or any(v.startswith(key + ".") for v in present):
            out.append(f"{key}={value}")
        elif key in valid or _is_open(base, key):
            out.append(f"++{key}={value}")
        else:
            parent = key.rpartition(".")[0]
            siblings = [v for v in valid if parent and v.startswith(parent + ".")] or valid
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(siblings)}")
    return base, out


def load_config(args: list[str]) -> DictConfig:
    """Compose the recipe named by `recipe=NAME` plus overrides into one resolved config."""
    recipe = next((a.split("=", 1)[1] for a in args if a.startswith("recipe=")), None)
    if recipe is None:
        raise ConfigError(f"missing recipe=NAME; available recipes: {', '.join(available_recipes())}")
    recipes = available_recipes()
    if recipe not in recipes:
        raise ConfigError(f"unknown recipe {recipe!r}; available recipes: {', '.join(recipes)}")
    base, overrides = _check_overrides(recipes[recipe], [a for a in args if not a.startswith("recipe=")])
    try:
        cfg = _compose(recipes[recipe], [f"+recipe={recipe}", *overrides])
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    with open_dict(cfg):
        for split in SPLITS:
            if OmegaConf.select(cfg, f"data.{split}") is not None:
                cfg.data[split] = OmegaConf.merge(SPLIT_KEYS, cfg.data[split])
    OmegaConf.resolve(cfg)
    schema.check(cfg, base)
    OmegaConf.set_struct(cfg, True)
    return cfg


def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    from distill.rundir import RunDir  # rundir reads files through distill.data, which imports this module

    path = RunDir(run_dir).config
    OmegaConf.save(cfg, path)
    return path


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run_dir)
