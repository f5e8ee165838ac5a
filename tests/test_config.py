import pytest
from omegaconf import OmegaConf

from distill.config import GROUPS, SPLIT_KEYS, available_recipes, group_options, load_config, save_config
from distill.errors import ConfigError
from distill.students import student_class
from distill.tasks import build_task


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_composes_and_validates(recipe):
    cfg = load_config([f"recipe={recipe}"])
    assert cfg.recipe == recipe
    assert cfg.run_dir == f"runs/{recipe}"
    task = build_task(cfg.task)
    assert task.labels
    assert student_class(cfg.student).kind == cfg.student.kind
    for split in ("seed", "corpus", "gold"):
        assert cfg.data[split].path
    assert cfg.data.gold.label_column, "gold must carry human labels"


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_group_option_composes_under_its_own_key(group):
    for option in group_options(group):
        cfg = load_config(["recipe=demo", f"{group}={option}"])
        assert cfg[group] is not None and not set(cfg[group]) & {"generations", "strategies", "rounds"} - set(
            {"audit": ["generations", "strategies"], "grow": ["rounds"], "refine": ["rounds"]}.get(group, []))
    assert not {"generations", "strategies", "anchor_fraction", "rounds"} & set(load_config(["recipe=demo"]))


def test_overrides_apply_and_config_is_saved(tmp_path):
    cfg = load_config(["recipe=demo", "train.epochs=2", "teacher.sim.accuracy=0.5", f"run_dir={tmp_path}/r"])
    assert cfg.train.epochs == 2 and cfg.teacher.sim.accuracy == 0.5
    assert cfg.data.seed.path == f"{tmp_path}/r/data/seed.jsonl"  # interpolations resolved
    saved = OmegaConf.load(save_config(cfg, tmp_path / "r"))
    assert saved == cfg


def test_run_dir_is_deterministic():
    assert load_config(["recipe=demo"]).run_dir == load_config(["recipe=demo"]).run_dir


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(["recipe=demo", "train.epoch=3"])
    assert "train.epoch" in str(e.value) and "train.epochs" in str(e.value)
    with pytest.raises(ConfigError, match="valid keys: .*run_dir"):
        load_config(["recipe=demo", "+nonsense=1"])


def test_unknown_recipe_and_group_option_list_choices():
    with pytest.raises(ConfigError, match="available recipes: .*demo"):
        load_config(["recipe=nope"])
    with pytest.raises(ConfigError, match="choose one of: .*simulated"):
        load_config(["recipe=demo", "teacher=nope"])
    with pytest.raises(ConfigError, match="missing recipe"):
        load_config(["train.epochs=1"])


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_documented_split_key_is_accepted_on_every_recipe(recipe):
    """A split's keys come from one schema, not from what each recipe happens to list."""
    for form in ("", "+", "++"):
        cfg = load_config([f"recipe={recipe}", f"{form}data.seed.limit=60", f"{form}data.gold.id_column=uid",
                           f"{form}data.corpus.max_chars=500"])
        assert (cfg.data.seed.limit, cfg.data.gold.id_column, cfg.data.corpus.max_chars) == (60, "uid", 500)
    assert set(SPLIT_KEYS) <= set(load_config([f"recipe={recipe}"]).data.gold)


def test_open_mappings_take_new_keys_and_numbers_stay_numbers():
    cfg = load_config(["recipe=demo", "+teacher.sim.confusions.sports=world", "teacher.sim.key_faults.sk-a=invalid"])
    assert cfg.teacher.sim.confusions.sports == "world" and cfg.teacher.sim.key_faults["sk-a"] == "invalid"
    assert cfg.teacher.sim.confusions.weather == "science"  # the recipe's own entries stay
    assert load_config(["recipe=demo", "teacher.sim.accuracy=1"]).teacher.sim.accuracy == 1  # an int is a number
    with pytest.raises(ConfigError, match=r"train.epochs must be a whole number \(the recipe has 15\), not 'x'"):
        load_config(["recipe=demo", "train.epochs=x"])


def test_unknown_key_lists_its_own_group_and_the_closest_key():
    with pytest.raises(ConfigError) as e:
        load_config(["recipe=demo", "refine.roundz=2"])
    assert str(e.value) == ("unknown config key 'refine.roundz'; did you mean 'refine.rounds'? valid keys under "
                            "refine: refine.rounds, refine.fraction, refine.explore, refine.min_gain")
    with pytest.raises(ConfigError, match=r"'sed' at the top level; did you mean 'seed'\? valid keys: .*refine"):
        load_config(["recipe=demo", "sed=1"])


def test_a_group_given_with_a_plus_picks_the_option_as_without():
    cfg = load_config(["recipe=demo", "+train=default", "++refine=default", "refine.rounds=3"])
    assert cfg.train == load_config(["recipe=demo", "train=default"]).train and cfg.refine.rounds == 3
