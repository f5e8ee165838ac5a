"""The train stage through its real entry points: kill and resume, two processes, launch configs, hub."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from accelerate.commands.config.config_args import load_config_from_file

from distill.config import load_config
from distill.students.trainer import checkpoint_step, last_checkpoint
from distill.teach import teach
from distill.train import push_to_hub

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["tiny_t5", "tiny_causal", "tiny_encoder"]
# the slowest checks run for one kind by default, for the others with `pytest -m extended`
ONE_KIND = [pytest.param(k, marks=pytest.mark.extended) if k != "tiny_encoder" else k for k in KINDS]


def run(*args):
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A run directory whose seed pool the (simulated) teacher has labeled."""
    run_dir = tmp_path_factory.mktemp("taught") / "run"
    teach(load_config(["recipe=demo", f"run_dir={run_dir}"]))
    return run_dir


def step(checkpoint: Path | None) -> int:
    return checkpoint_step(checkpoint) if checkpoint else 0


@pytest.mark.slow
@pytest.mark.parametrize("student", ONE_KIND)
def test_killed_training_resumes_from_its_last_checkpoint(taught, tmp_path, student):
    run_dir = tmp_path / "run"
    shutil.copytree(taught, run_dir)
    args = ["distill", "train", "recipe=demo", f"run_dir={run_dir}", f"student={student}", "train.max_steps=100",
            "train.save_steps=10", "train.logging_steps=5"]
    checkpoints = run_dir / "student" / "checkpoints"
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while step(last_checkpoint(checkpoints)) < 20:
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = step(last_checkpoint(checkpoints))
    assert 20 <= at_kill < 100 and not (run_dir / "student" / "student.json").exists()

    out = run(*args)
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert meta["resumed_from"] == at_kill and meta["steps"] == 100, meta
    assert f"resuming from {checkpoints / f'checkpoint-{at_kill}'}" in out.stdout
    # one unbroken run in the trainer's history: losses logged every 5 steps, none twice, none missing
    history = json.loads((checkpoints / "checkpoint-100" / "trainer_state.json").read_text())["log_history"]
    assert [e["step"] for e in history if "loss" in e] == list(range(5, 101, 5))
    assert (run_dir / "student" / "merged" / "config.json").exists()
    assert meta["temperature"] > 0 and meta["dev_rows"] == 40


@pytest.mark.slow
def test_a_changed_recipe_trains_afresh_instead_of_resuming(taught, tmp_path, capsys):
    from distill.train import train

    run_dir = tmp_path / "run"
    shutil.copytree(taught, run_dir)
    args = ["recipe=demo", f"run_dir={run_dir}", "student=tiny_encoder", "train.max_steps=12", "train.save_steps=4"]
    train(load_config(args))  # in this process: the killed-training test above goes through the command
    capsys.readouterr()
    train(load_config(args))  # the same settings: resumes at the end, trains nothing more
    assert json.loads((run_dir / "student" / "student.json").read_text())["resumed_from"] == 12
    assert "resuming from" in capsys.readouterr().out
    train(load_config([*args, "train.lr=1e-3"]))
    changed = capsys.readouterr().out
    assert "starting afresh" in changed and "resuming" not in changed
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert meta["resumed_from"] is None and meta["steps"] == 12


@pytest.mark.slow
@pytest.mark.parametrize("student", ONE_KIND)
def test_two_processes_train_on_different_rows_and_save_one_student(taught, tmp_path, student):
    run_dir = tmp_path / "ddp"
    shutil.copytree(taught, run_dir)
    run("accelerate", "launch", "--config_file", "distill/configs/accelerate/multi_gpu.yaml", "--num_processes", "2",
        "--mixed_precision", "no", "distill/train.py", "recipe=demo", f"run_dir={run_dir}", f"student={student}",
        "train.epochs=1", "train.batch_size=12")
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert meta["world_size"] == 2 and meta["train_rows"] == 360
    # each process saw its own half of the rows in the epoch, and no row went to both
    assert meta["rows_per_process"] == [180, 180] and meta["rows_on_several_processes"] == 0
    assert meta["rows_seen"] == 360
    # 360 rows, 12 per step per process, two processes: 15 steps (not the 30 of one process)
    assert meta["steps"] == 15
    saved = [p for p in (run_dir / "student").rglob("*.safetensors") if "checkpoints" not in p.parts]
    assert sorted(p.relative_to(run_dir / "student").as_posix() for p in saved) == \
        ["adapter/adapter_model.safetensors", "base/model.safetensors", "merged/model.safetensors"]


@pytest.mark.slow
def test_rationale_mode_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    run("distill", "train", "recipe=demo", f"run_dir={run_dir}", "task.rationale=true", "train.max_steps=20",
        "data.demo.sizes.seed=120", "data.demo.sizes.gold=40")
    # the teacher was asked for a rationale and gave one with every valid label
    rows = [json.loads(line) for line in open(run_dir / "teacher" / "seed.jsonl")]
    assert all(json.loads(r["raw"])["rationale"].startswith("The text mentions") for r in rows if r["label"])
    meta = json.loads((run_dir / "student" / "student.json").read_text())
    assert meta["rationale_rows"] == meta["train_rows"] == 108
    assert "distilling step-by-step" in (run_dir / "student" / "merged" / "README.md").read_text()


@pytest.mark.parametrize("path", sorted((ROOT / "distill" / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_launch_configs_are_valid_accelerate_configs(path):
    cfg = load_config_from_file(str(path))  # unknown keys are an error here
    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED",
                "deepspeed_zero3": "DEEPSPEED", "fsdp": "FSDP"}[path.stem]
    assert cfg.distributed_type.value == expected and cfg.mixed_precision == "bf16"
    if path.stem.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(path.stem[-1])
    assert path.stem in (ROOT / "README.md").read_text(), "the README shows the command for each config"


def test_push_to_hub_uploads_the_trained_student_with_its_card(make_cfg, tmp_path, monkeypatch):
    calls = []

    class Hub:  # the hub's HTTP API, recorded
        def create_repo(self, repo_id, exist_ok, private):
            calls.append(("create", repo_id, private))
            return SimpleNamespace(repo_id=f"someone/{repo_id}")

        def upload_folder(self, repo_id, folder_path, path_in_repo=None, commit_message=None):
            calls.append(("upload", repo_id, path_in_repo, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    student_dir = tmp_path / "student"
    for folder, files in {"adapter": ["adapter_model.safetensors", "README.md"],
                          "merged": ["model.safetensors", "config.json", "README.md"]}.items():
        (student_dir / folder).mkdir(parents=True)
        for f in files:
            (student_dir / folder / f).write_text("x")
    assert push_to_hub(make_cfg("demo", "train.push_to_hub=true"), student_dir) == "someone/demo-student"
    assert calls == [("create", "demo-student", True),
                     ("upload", "someone/demo-student", None, ["README.md", "adapter_model.safetensors"]),
                     ("upload", "someone/demo-student", "merged", ["README.md", "config.json", "model.safetensors"])]


@pytest.mark.parametrize("student", KINDS)
def test_training_frees_the_trained_model_before_calibrating_and_builds_its_arguments_first(
        taught, tmp_path, monkeypatch, student):
    """Calibration loads the saved student: the trained copy, its optimizer and gradients must be
    gone by then. The trainer's arguments exist before the model (DeepSpeed ZeRO-3 then shards it
    as it loads), and the process group waits long enough for rank 0's export."""
    import gc
    import weakref
    from datetime import timedelta

    from accelerate import PartialState

    import distill.train as train_module
    from distill.students import student_class

    run_dir = tmp_path / "run"
    shutil.copytree(taught, run_dir)
    cfg = load_config(["recipe=demo", f"run_dir={run_dir}", f"student={student}", "train.max_steps=4"])
    cls = student_class(cfg.student)
    events, trained = [], []
    create, load, training_args = cls.create.__func__, cls.load.__func__, cls.training_args.__func__

    def recording_args(c, *a, **kw):
        events.append("args")
        return training_args(c, *a, **kw)

    def recording_create(c, *a, **kw):
        events.append("model")
        made = create(c, *a, **kw)
        trained.append(weakref.ref(made.model))
        return made

    def checking_load(c, *a, **kw):
        gc.collect()
        events.append("load: trained model " + ("alive" if trained[0]() is not None else "freed"))
        return load(c, *a, **kw)

    monkeypatch.setattr(cls, "training_args", classmethod(recording_args))
    monkeypatch.setattr(cls, "create", classmethod(recording_create))
    monkeypatch.setattr(cls, "load", classmethod(checking_load))
    timeouts = []

    def recording_state(**kw):
        timeouts.append(kw.get("timeout"))
        return PartialState(**kw)

    monkeypatch.setattr(train_module, "PartialState", recording_state)
    meta = train_module.train(cfg, teach_first=False)
    assert meta["steps"] == 4
    assert events[:2] == ["args", "model"]
    assert events[2] == "load: trained model freed", events
    assert timeouts and timeouts[0] >= timedelta(hours=1)


def test_a_small_set_trains_for_at_least_min_steps_before_the_dev_loss_counts(taught, tmp_path):
    from distill.data import read_jsonl
    from distill.students.trainer import checkpoint_step
    from distill.train import train

    labeled = [r for r in read_jsonl(taught / "teacher" / "seed.jsonl") if r["label"] is not None][:12]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + "\n" for r in labeled))
    runs = {}
    # at lr 0 the dev loss never falls: early stopping ends an 8-epoch run at its second evaluation
    # and keeps the first checkpoint, every time (a falling loss would make that a matter of chance)
    for name, settings in {"fixed": ["train.epochs=2"],
                           "stopping": ["train.epochs=8", "train.early_stopping_patience=1", "train.lr=0"],
                           "min_steps": ["train.epochs=2", "train.early_stopping_patience=1", "train.min_steps=15",
                                         "train.lr=0"]}.items():
        cfg = load_config(["recipe=demo", f"run_dir={tmp_path / name}", "student=tiny_encoder", f"train.rows={rows}",
                           "train.batch_size=8", "train.dev_fraction=0.2", "train.lr=1e-3",
                           "train.early_stopping_patience=null", *settings])
        meta = train(cfg, teach_first=False)
        runs[name] = (meta["steps"], meta["epochs"], checkpoint_step(meta["best_checkpoint"]))
    # 10 training rows at batch 8: 2 steps an epoch. min_steps raises 2 epochs to 8 and runs them
    # all, though the dev loss never improves, and chooses the best checkpoint from step 15 on
    assert runs["fixed"][:2] == (4, 2)
    assert runs["stopping"] == (4, 8, 2)  # steps run, epochs set, best checkpoint
    assert runs["min_steps"] == (16, 8, 16)
