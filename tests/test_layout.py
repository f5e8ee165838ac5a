"""The boundaries that keep the code one place to change: stages reach tasks only through the Task
interface, no stage imports the command line, only the stages that may pay the teacher reach it,
one routing path (route overlays answers and writes review files, the shards are only joined,
the cascade only picks thresholds), one module names the run directory's files and one rule
resumes every step, and grow, refine and the audit build students through the library layer."""

import ast
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distill import api
from distill.tasks import KINDS
from distill.tasks.base import Task

PACKAGE = Path(__file__).resolve().parents[1] / "distill"
STUDENT_KINDS = {"encoder.py", "seq2seq.py", "causal.py"}


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return names


def test_no_stage_imports_the_command_line():
    offenders = [p.name for p in modules() if p.name not in ("cli.py", "__main__.py")
                 and any(n == "distill.cli" or n.startswith("distill.cli.") for n in imported(p))]
    assert offenders == []


def test_task_kinds_are_reached_only_through_the_task_interface():
    for path in modules():
        if path.parent.name == "tasks" or (path.parent.name == "students" and path.name in STUDENT_KINDS):
            continue
        text = path.read_text()
        assert "token_level" not in text, f"{path.relative_to(PACKAGE)} branches on token_level"
        kinds = {n for n in imported(path) if n.split(".")[:2] == ["distill", "tasks"] and len(n.split(".")) > 2
                 and n.split(".")[2] in ("ner", "classification", "multilabel")}
        assert not kinds, f"{path.relative_to(PACKAGE)} imports {kinds}"


def test_a_kind_missing_an_abstract_method_cannot_be_built():
    class Half(Task):  # everything but the label's Parquet type
        pass

    assert Task.__abstractmethods__  # an interface with no abstract method checks nothing
    for name in Task.__abstractmethods__:
        assert all(callable(getattr(kind, name)) for kind in KINDS.values())
    with pytest.raises(TypeError, match="abstract"):
        Half(OmegaConf.create({"labels": ["a"]}))


# the stages that may call (and pay) the teacher, and the teacher package itself
PAYS = {"teach.py", "grow.py", "route.py", "refine.py"}


def test_only_teach_grow_route_and_refine_reach_the_teacher():
    reach = {p.name for p in modules() if p.parent.name != "teacher"
             and any(n in ("distill.teacher", "distill.teacher.open_teacher", "distill.teacher.Teacher",
                           "distill.teacher.client.Teacher") for n in imported(p))}
    assert reach == PAYS


def defined(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_one_routing_path():
    # route owns the overlay and the review files; the shards know nothing of routing; the cascade picks thresholds
    assert {"overlay", "write_review", "unsure_rows", "apply_routes", "audit_rows"} <= defined(PACKAGE / "route.py")
    for name in ("cascade.py", "shards.py", "label.py"):
        assert not {"overlay", "write_review", "unsure_rows"} & defined(PACKAGE / name), name
    assert not {n for n in imported(PACKAGE / "shards.py") if n.startswith(("distill.route", "distill.cascade"))}
    assert not {n for n in imported(PACKAGE / "cascade.py") if n.startswith(("distill.route", "distill.label"))}


# the run directory's files and folders, as a stage would name them in a path join
RUN_FILE = re.compile(r"\.(json|jsonl|parquet|sqlite|html|png|yaml|txt|xml)$")
RUN_FOLDERS = {"teacher", "student", "labels", "cascade", "monitor", "grow", "refine", "audit", "shortlist", "review",
               "checkpoints", "superseded"}
# modules that lay out the inside of a folder they own, or files outside the run directory
OWN_LAYOUT = {"rundir.py", "shards.py", "demo.py", "config.py"}


def joined_names(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every `x / "name"` (or f-string) in a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                out.append((node.lineno, right.value))
            elif isinstance(right, ast.JoinedStr):
                out.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in right.values)))
    return out


def test_one_module_names_the_run_directory():
    offenders = [f"{p.relative_to(PACKAGE)}:{line} {name}" for p in modules()
                 if p.name not in OWN_LAYOUT and p.parent.name not in ("students", "teacher")
                 for line, name in joined_names(p) if RUN_FILE.search(name) or name in RUN_FOLDERS]
    assert offenders == []
    # and the scan sees a join: rundir.py itself names them
    assert any(name == "round.json" for _, name in joined_names(PACKAGE / "rundir.py"))


def test_one_resume_rule():
    # the stamp and the step records are named once; the stages that resume steps go through rundir.resume
    for path in modules():
        if path.name != "rundir.py":
            text = path.read_text()
            for name in ("fingerprint.json", "round.json", "generation.json"):
                assert f'"{name}"' not in text, f"{path.relative_to(PACKAGE)} names {name}"
    for name in ("train.py", "label.py", "grow.py", "refine.py", "audit.py"):
        assert "distill.rundir.resume" in imported(PACKAGE / name), name


def test_grow_refine_and_audit_build_students_through_the_library():
    for name in ("grow.py", "refine.py", "audit.py"):
        names, text = imported(PACKAGE / name), (PACKAGE / name).read_text()
        assert "distill.api.fit" in names, name
        assert "train.rows" not in text and "round_config" not in text, name
    assert {"fit", "predict", "score", "agreement"} <= set(api.__all__)


# config errors outside the schema: each needs more than the config (files, a model, the machine)
NEEDS_MORE = {
    "config.py": "the recipe folders: unknown recipes, config options and keys",
    "runner.py": "the file system: run_dir is a file, --recipes names no folder",
    "cascade.py": "the run directory: cascade/threshold.json, the seed rows' billed cost",
    "monitor.py": "the baseline run directory's gold labels",
    "base.py": "the machine: CUDA and bitsandbytes for QLoRA",
    "encoder.py": "the model's tokenizer",
}


def test_config_values_are_checked_in_the_schema_alone():
    raising = {p.name for p in modules() if re.search(r"raise ConfigError\b", p.read_text())}
    assert raising - {"schema.py"} <= set(NEEDS_MORE), sorted(raising - {"schema.py"} - set(NEEDS_MORE))
    assert "schema.py" in raising


def reads(path: Path, names: set[str]) -> list[tuple[str, str]]:
    """(enclosing function, attribute) of each read of one of `names` in a module."""
    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if isinstance(child, ast.Attribute) and child.attr in names:
                found.append((where, child.attr))
            visit(child, inner)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_only_the_tasks_and_the_encoders_head_choice_read_the_task_shape(tmp_path):
    shape = {"token_level", "multi_label"}
    outside = {p.relative_to(PACKAGE).as_posix(): reads(p, shape) for p in modules()
               if p.parent.name != "tasks" and reads(p, shape)}
    assert set(outside) <= {"students/encoder.py"}, outside
    assert {where for where, _ in outside.get("students/encoder.py", [])} <= {"for_task"}, outside
    # the check sees a read where one is
    (tmp_path / "stage.py").write_text("def pick(task):\n    return 2 if task.multi_label else 1\n")
    assert reads(tmp_path / "stage.py", shape) == [("pick", "multi_label")]
