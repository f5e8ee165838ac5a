"""The boundaries that keep the code one place to change: stages reach tasks only through the Task
interface, no stage imports the command line, only the stages that may pay the teacher reach it,
and one routing path: route overlays answers and writes review files, the shards are only joined,
the cascade only picks thresholds."""

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

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
