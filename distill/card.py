"""The student's model card: who taught it, on what, with which recipe, and how it scores."""

from __future__ import annotations

import json
from pathlib import Path


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_card(cfg, run_dir: Path) -> Path:
    """(Re)write student/adapter/README.md from whatever the run directory holds so far."""
    run_dir = Path(run_dir)
    meta = _load(run_dir / "student" / "student.json")
    teacher = _load(run_dir / "teacher" / "summary.json")
    monitor = _load(run_dir / "monitor" / "metrics.json")
    simulated = " (simulated: answers from human gold with noise, "\
        f"target accuracy {teacher.get('sim', {}).get('accuracy')})" if teacher.get("simulated") else ""
    lines = [
        "---",
        "library_name: peft",
        f"base_model: {meta.get('base_model')}",
        "tags: [distill, lora, distillation]",
        "---",
        f"# {cfg.recipe} student",
        "",
        f"A {meta.get('kind')} student ({meta.get('name')}, LoRA r={cfg.student.lora.r}) distilled with "
        f"`distill` from teacher `{cfg.teacher.model}`{simulated}.",
        "",
        f"- recipe: `{cfg.recipe}` (task: {cfg.task.kind}; labels: {', '.join(cfg.task.labels)})",
        f"- seed pool: `{cfg.data.seed.path}`; {meta.get('train_rows')} teacher-labeled rows for training, "
        f"{meta.get('val_rows')} held back",
        f"- gold (held out, human): `{cfg.data.gold.path}`",
        f"- adapter hash: `{meta.get('adapter_hash')}`",
        f"- training: {meta.get('steps')} steps, final loss {meta.get('train_loss', float('nan')):.4f}; "
        f"agreement with the teacher on held-back seed rows: {meta.get('val_agreement', float('nan')):.3f}",
    ]
    if monitor:
        lines += ["", "## Scores against human gold", "", "| system | " + " | ".join(monitor["headline"]) + " |",
                  "|---|" + "---|" * len(monitor["headline"])]
        for name, m in monitor["systems"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in monitor["headline"]) + " |")
    path = run_dir / "student" / "adapter" / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
