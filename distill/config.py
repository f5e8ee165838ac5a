"""Recipe loading with Hydra's compose API.

`recipe=NAME` picks `NAME.yaml` from the user's recipe folders (`--recipes DIR` or
`DISTILL_RECIPES`, searched first) or from the recipes that ship in the package
(`distill/recipes/`); a recipe composes groups from `GROUP/OPTION.yaml` in those folders and in
`distill/configs/`. Every other `key=value` overrides a key, `group=option` swaps a config group.
Unknown keys, groups and recipes are errors that list the valid choices. The run directory is
derived from the config alone, so every rank of a multi-process launch agrees on it.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from distill import schema
from distill.errors import ConfigError
from distill.schema import SPLITS, did_you_mean

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


def _read(path: Path) -> DictConfig:
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path} must be a mapping of keys (defaults, task, data, ...), not a list")
    return node


def listed_groups(node: DictConfig) -> dict[str, str | None]:
    """The groups a recipe's own defaults list picks, and their options (`- teacher: openai`,
    `- override student: x`, `- optional refine: default`)."""
    picked = {}
    for entry in node.get("defaults") or []:
        if isinstance(entry, DictConfig):
            for key, option in entry.items():
                picked[str(key).split()[-1].lstrip("/").split("@")[0]] = option
    return picked


@functools.cache
def _shipped_picks() -> dict[str, Counter]:
    picks: dict[str, Counter] = {}
    for path in sorted((PACKAGE / "recipes").glob("*.yaml")):
        for group, option in listed_groups(OmegaConf.load(path)).items():
            picks.setdefault(group, Counter())[option] += 1
    return picks


def default_option(group: str) -> str | None:
    """What a recipe that does not list `group` gets: its `default` option, else the option every
    shipped recipe picks; None where they differ (teacher, student: the recipe must choose)."""
    if "default" in group_options(group):
        return "default"
    picks = _shipped_picks().get(group, Counter())
    return next(iter(picks)) if len(picks) == 1 else None


def _added_groups(path: Path, chosen: dict[str, str]) -> dict[str, str]:
    """The groups a recipe's defaults list lacks (it was written before they existed), each with
    the option chosen on the command line or its default."""
    listed = listed_groups(_read(path))
    added = {}
    for group in GROUPS:
        if group in listed:
            continue
        added[group] = chosen.get(group) or default_option(group)
        if added[group] is None:
            usual = [o for o, _ in _shipped_picks().get(group, Counter()).most_common(1)] or group_options(group)
            raise ConfigError(f"recipe {path} has no {group} config: add a line such as `- {group}: {usual[0]}` to "
                              f"its defaults list ({group} options: {', '.join(group_options(group))}), "
                              f"or pass {group}=NAME")
    return added


def _compose(path: Path, overrides: list[str], added: dict[str, str] | None = None) -> DictConfig:
    # the recipe's own folder is Hydra's primary one, so its groups win; then the user's, then ours
    home, name = path.parent, path.stem
    if added:
        # the groups go before the recipe's own keys (_self_), as if it listed them: its values win
        node = _read(path)
        entries = list(node.get("defaults") or [])
        at = entries.index("_self_") if "_self_" in entries else len(entries)
        node.defaults = [*entries[:at], *({g: o} for g, o in added.items()), *entries[at:]]
        name = f"{name}+defaults"  # no file has this name, so Hydra takes the copy from its store
        ConfigStore.instance().store(name=name, node=node)
    search = ",".join(repr(f"file://{d}") for d in config_dirs() if d != home)
    try:
        with initialize_config_dir(config_dir=str(home), version_base=None):
            return compose(name, overrides=[f"hydra.searchpath=[{search}]", *overrides])
    except HydraException as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def _is_open(base: DictConfig, key: str) -> bool:
    """Under a mapping meant to take any key (OPEN, or one the config leaves empty)."""
    parts = key.split(".")
    for i in range(1, len(parts)):
        node = OmegaConf.select(base, ".".join(parts[:i]))
        if ".".join(parts[:i]) in OPEN or isinstance(node, DictConfig) and len(node) == 0:
            return True
    return False


def _unknown_key(key: str, valid: list[str]) -> str:
    """The message for a key no config has: the closest valid key, and the keys beside it."""
    mappings = {v.rsplit(".", i)[0] for v in valid for i in range(1, v.count(".") + 1)}  # refine, teacher.sim
    hint = did_you_mean(key, [*valid, *sorted(mappings)])
    parent = key.rpartition(".")[0]
    while parent and not any(v.startswith(parent + ".") for v in valid):
        parent = parent.rpartition(".")[0]
    if parent:
        under = [v for v in valid if v.startswith(parent + ".")]
        return f"unknown config key {key!r};{hint} valid keys under {parent}: {', '.join(under)}"
    top = dict.fromkeys(v.split(".")[0] for v in valid)
    return f"unknown config key {key!r} at the top level;{hint} valid keys: {', '.join(top)}"


def _check_overrides(path: Path, overrides: list[str]) -> tuple[DictConfig, list[str], dict[str, str]]:
    """Reject unknown keys before Hydra does, with the list of valid ones; return the recipe with
    its group choices, the overrides in the form Hydra takes (`++key` adds a documented key the
    recipe does not list) and the groups the recipe's defaults list lacks, with their options."""
    chosen = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"argument {item!r} is not key=value")
        raw, value = item.split("=", 1)
        key = raw.lstrip("+")  # `+refine=x`, as Hydra advises for a group the recipe lacks: the same
        if key in GROUPS:
            if value not in group_options(key):
                raise ConfigError(f"unknown {key} config {value!r}; choose one of: {', '.join(group_options(key))}")
            chosen[key] = value
    added = _added_groups(path, chosen)
    picks = [f"{g}={o}" for g, o in chosen.items() if g not in added]
    base = _compose(path, [f"+recipe={path.stem}", *picks], added)
    present = _leaf_keys(base)
    valid = present + [k for split in SPLITS if OmegaConf.select(base, f"data.{split}") is not None
                       for k in (f"data.{split}.{name}" for name in SPLIT_KEYS) if k not in present]
    out = list(picks)
    for item in overrides:
        raw, value = item.split("=", 1)
        key = raw.lstrip("+~")
        if raw.startswith("~"):
            out.append(item)
        elif key in GROUPS:
            continue  # in picks, or in the recipe's defaults list as added
        elif key in present or any(v.startswith(key + ".") for v in present):
            out.append(f"{key}={value}")
        elif key in valid or _is_open(base, key):
            out.append(f"++{key}={value}")
        else:
            raise ConfigError(_unknown_key(key, valid))
    return base, out, added


def load_config(args: list[str]) -> DictConfig:
    """Compose the recipe named by `recipe=NAME` plus overrides into one resolved config."""
    recipe = next((a.split("=", 1)[1] for a in args if a.startswith("recipe=")), None)
    if recipe is None:
        raise ConfigError(f"missing recipe=NAME; available recipes: {', '.join(available_recipes())}")
    recipes = available_recipes()
    if recipe not in recipes:
        raise ConfigError(f"unknown recipe {recipe!r}; available recipes: {', '.join(recipes)}")
    base, overrides, added = _check_overrides(recipes[recipe], [a for a in args if not a.startswith("recipe=")])
    cfg = _compose(recipes[recipe], [f"+recipe={recipe}", *overrides], added)
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
