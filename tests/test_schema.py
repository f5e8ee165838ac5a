"""The config schema: every key's type, range and choices, checked as a recipe loads."""

from dataclasses import fields, is_dataclass
from typing import Annotated, Union, get_args, get_origin, get_type_hints

import pytest
from omegaconf import DictConfig

from distill import schema
from distill.config import GROUPS, available_recipes, group_options, load_config
from distill.errors import ConfigError


def schema_keys(cls, prefix="") -> set[str]:
    keys = set()
    for f in fields(cls):
        kind = get_type_hints(cls, include_extras=True)[f.name]
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        inner = [k for k in (get_args(kind) if get_origin(kind) is Union else [kind]) if is_dataclass(k)]
        keys |= schema_keys(inner[0], f"{prefix}{f.name}.") if inner else {f"{prefix}{f.name}"}
    return keys


def shipped_keys() -> set[str]:
    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, DictConfig) and len(v) and not schema_open(f"{prefix}{k}"):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    keys = set()
    for recipe in available_recipes():
        keys |= set(leaves(load_config([f"recipe={recipe}"])))
    for group in GROUPS:
        for option in group_options(group):
            keys |= set(leaves(load_config(["recipe=banking", f"{group}={option}"])))
    return keys


def schema_open(key: str) -> bool:
    return key in ("teacher.sim.confusions", "teacher.sim.ner_errors", "teacher.sim.key_faults", "task.aliases")


def test_every_schema_key_is_in_a_shipped_config_and_every_shipped_key_in_the_schema():
    declared = {k for k in schema_keys(schema.Config) if not k.startswith("data.")}
    shipped = {k for k in shipped_keys() if not k.startswith("data.")}
    # keys a recipe may set that no shipped config does: said in docs/recipes.md
    optional = {"task.max_edit_distance", "student.bidirectional", "student.case_marker", "student.pooling", "teacher.sim.accuracy"}
    groups = {k.rsplit(".", 1)[0] for k in declared}  # a mapping left null (student.tiny: null)
    assert shipped <= declared | groups, sorted(shipped - declared - groups)
    assert declared - shipped <= optional, sorted(declared - shipped - optional)


@pytest.mark.parametrize("override, message", [
    ("train.epochs=three", "train.epochs must be a whole number (the recipe has 15), not 'three'"),
    ("train.lr=-1", "train.lr must be at least 0, not -1.0"),
    ("label.threshold=high", "label.threshold must be a number in [0, 1], 'auto' or null, not 'high'"),
    ("label.splits=[corpus,seed]", "label.splits[1] must be one of ['corpus', 'gold']"),
    ("teacher.sim.error_rate=2", "teacher.sim.error_rate must be in [0, 1], not 2.0"),
    ("teacher.api_key_env=5", "teacher.api_key_env must be text, a list of texts or null, not 5"),
    ("student.lora.dropout=1", "student.lora.dropout must be in [0, 1), not 1.0"),
    ("monitor.fail_on=always", "monitor.fail_on must be one of ['warning', 'critical', 'never']"),
    ("grow.rounds=0", "grow.rounds must be at least 1, not 0"),
    ("audit.generations=0", "audit.generations must be at least 1 (generations after generation 0), not 0"),
])
def test_a_bad_value_names_the_key_the_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(["recipe=demo", override])
    assert message in str(e.value), str(e.value)


def test_a_recipe_of_the_users_is_held_to_the_schema_too(tmp_path, monkeypatch):
    demo = available_recipes()["demo"].read_text()
    monkeypatch.setenv("DISTILL_RECIPES", str(tmp_path))
    (tmp_path / "typo.yaml").write_text(demo.replace("label: {batch_size: 64}", "label: {batch_sise: 64}"))
    with pytest.raises(ConfigError, match="unknown config key 'label.batch_sise' in recipe; valid keys: label.audit"):
        load_config(["recipe=typo"])
    (tmp_path / "quoted.yaml").write_text(demo.replace("label: {batch_size: 64}", 'train: {epochs: "3"}'))
    with pytest.raises(ConfigError, match="train.epochs must be a whole number, not '3'"):
        load_config(["recipe=quoted"])
    assert load_config(["recipe=demo"]).label.batch_size == 64  # the shipped one still loads
