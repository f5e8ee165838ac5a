"""A recipe written before a config group existed still runs: the group takes its shipped default,
and a misspelt key is answered with the closest key and the keys of its own group."""

import re

import pytest
from omegaconf import OmegaConf

import distill.refine
from distill.cli import main
from distill.config import GROUPS, available_recipes, default_option, group_files, load_config
from distill.errors import ConfigError
from distill.runner import take_recipes_option

OTHER_GROUPS = re.compile(r"\b(teacher|student|train|monitor|label|audit|grow)\.")


def old_recipe(folder, *dropped: str, extra: str = "") -> str:
    """Write `old.yaml` to folder: the demo recipe whose defaults list lacks the `dropped` groups."""
    text = available_recipes()["demo"].read_text()
    for group in dropped:
        line = next(l for l in text.splitlines(keepends=True) if l.strip().startswith(f"- {group}:"))
        text = text.replace(line, "")
    folder.mkdir(exist_ok=True)
    (folder / "old.yaml").write_text(text + extra)
    return "recipe=old"


@pytest.fixture
def mine(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_RECIPES", "")  # take_recipes_option sets it: restored after the test
    return tmp_path / "recipes"


def load(folder, *args):
    """As a user runs it: `--recipes DIR recipe=old key=value ...`."""
    return load_config(take_recipes_option(["--recipes", str(folder), *args]))


def test_groups_missing_from_the_defaults_list_take_the_shipped_defaults(mine):
    cfg = load(mine, old_recipe(mine, "refine", "audit"), "run_dir=r")
    assert cfg.refine == OmegaConf.load(group_files("refine")["default"])
    assert (cfg.refine.rounds, cfg.refine.fraction) == (2, 0.2)
    assert cfg.audit.generations == 5
    demo = load_config(["recipe=demo", "run_dir=r"])
    assert (cfg.teacher, cfg.train, cfg.label) == (demo.teacher, demo.train, demo.label)  # the rest as listed


def test_overrides_of_a_missing_group_apply(mine):
    recipe = old_recipe(mine, "refine", "audit")
    assert load(mine, recipe, "refine.rounds=3").refine.rounds == 3
    assert load(mine, recipe, "audit.generations=2", "refine.explore=0").audit.generations == 2
    for pick in ("refine=default", "+refine=default"):  # the latter as Hydra advised before
        cfg = load(mine, recipe, pick, "refine.rounds=4")
        assert (cfg.refine.rounds, cfg.refine.fraction) == (4, 0.2)


def test_the_recipes_own_values_still_win_over_a_default_it_did_not_list(mine):
    recipe = old_recipe(mine, "refine", extra="refine: {rounds: 5}\n")
    cfg = load(mine, recipe)
    assert (cfg.refine.rounds, cfg.refine.fraction) == (5, 0.2)
    assert load(mine, recipe, "refine.rounds=1").refine.rounds == 1  # the command line over both


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_defaults_or_names_the_line_to_add(mine, group):
    recipe = old_recipe(mine, group)
    option = default_option(group)
    if option is None:  # the shipped recipes pick different ones: the recipe must choose
        with pytest.raises(ConfigError) as e:
            load(mine, recipe)
        assert f"old.yaml has no {group} config: add a line such as `- {group}: " in str(e.value)
        picked = load(mine, recipe, f"{group}={demo_option(group)}", "run_dir=r")  # or one given on the command line
        assert picked[group] == load_config(["recipe=demo", "run_dir=r"])[group]
    else:
        shipped = load_config(["recipe=demo", "run_dir=r", f"{group}={option}"])
        assert load(mine, recipe, "run_dir=r")[group] == shipped[group]


def demo_option(group: str) -> str:
    demo = OmegaConf.load(available_recipes()["demo"])
    return next(e[group] for e in demo.defaults if not isinstance(e, str) and group in e)


def test_only_teacher_and_student_have_no_default():
    assert {g for g in GROUPS if default_option(g) is None} == {"teacher", "student"}


def test_a_misspelt_key_suggests_the_right_one_and_lists_its_group_only(mine):
    recipe = old_recipe(mine, "refine")
    with pytest.raises(ConfigError) as e:
        load(mine, recipe, "refine.roundz=2")
    msg = str(e.value)
    assert msg.startswith("unknown config key 'refine.roundz'; did you mean 'refine.rounds'? valid keys under refine: ")
    assert "refine.fraction" in msg and not OTHER_GROUPS.search(msg), msg

    with pytest.raises(ConfigError) as e:
        load(mine, recipe, "teacher.sim.accurcy=0.5")
    assert "did you mean 'teacher.sim.accuracy'? valid keys under teacher.sim: " in str(e.value)
    assert "teacher.model" not in str(e.value)


def test_an_unknown_top_level_key_lists_the_top_level_keys(mine):
    with pytest.raises(ConfigError) as e:
        load(mine, old_recipe(mine, "refine"), "refin.rounds=2")
    msg = str(e.value)
    assert "at the top level; did you mean 'refine.rounds'? valid keys: " in msg
    listed = msg.split("valid keys: ")[1].split(", ")
    assert {"refine", "teacher", "run_dir", "seed"} <= set(listed) and not any("." in k for k in listed)


def test_a_misspelt_key_in_the_recipe_file_suggests_the_right_one(mine):
    with pytest.raises(ConfigError) as e:
        load(mine, old_recipe(mine, "refine", extra="refine: {roundz: 3}\n"))
    msg = str(e.value)
    assert msg.startswith("unknown config key 'refine.roundz' in recipe; valid keys: refine.")
    assert msg.endswith("; did you mean 'refine.rounds'?") and not OTHER_GROUPS.search(msg), msg


def test_distill_refine_on_an_old_recipe_gets_past_its_config(mine, tmp_path, monkeypatch, capsys):
    recipe = old_recipe(mine, "refine", "audit")
    seen = []

    class Reached(Exception):
        pass

    def train(cfg):  # refine trains its first student here: the config has been read by now
        seen.append(cfg)
        raise Reached

    monkeypatch.setattr(distill.refine, "train", train)
    with pytest.raises(Reached):
        main(["refine", "--recipes", str(mine), recipe, f"run_dir={tmp_path / 'run'}", "refine.rounds=3"])
    assert seen[0].refine.rounds == 3 and seen[0].recipe == "old"

    with pytest.raises(SystemExit) as e:  # a misspelt key: one line and exit status 2, no traceback
        main(["refine", "--recipes", str(mine), recipe, "refine.roundz=3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("distill: error: unknown config key 'refine.roundz'; did you mean")
