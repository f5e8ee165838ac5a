"""The student's model card: who taught it, on what data, with which recipe, how it scores on its
dev split and against human gold, and how its confidences are calibrated."""

from __future__ import annotations

from pathlib import Path

from distill.data import read_json
from distill.rundir import RunDir, StudentDir


def _num(value, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "n/a"


def write_card(cfg, run: RunDir, student_dir: Path | None = None) -> list[Path]:
    """(Re)write README.md in the adapter and merged-model folders of the student in
    `student_dir` (the run's own by default) from what the run directory holds; the monitor's
    scores go on the run's own student's card only."""
    student_dir = Path(student_dir or run.student)
    files = StudentDir(student_dir)
    meta, calib = read_json(files.record), read_json(files.calibration)
    teacher = read_json(run.teacher_summary)
    monitor = read_json(run.metrics) if student_dir == run.student else {}
    simulated = " (simulated: answers from human gold with noise, "\
        f"target accuracy {teacher.get('sim', {}).get('accuracy')})" if teacher.get("simulated") else ""
    method = {"lora": f"LoRA r={cfg.student.lora.r}", "qlora": f"QLoRA (4-bit base) r={cfg.student.lora.r}",
              "full": "full fine-tuning"}[cfg.student.method]
    hashes = meta.get("data_hashes", {})
    body = [
        f"# {cfg.recipe} student",
        "",
        f"A {meta.get('kind')} student ({meta.get('name')}, {method}) distilled with `distill` from teacher "
        f"`{cfg.teacher.model}`{simulated}.",
        "",
        "## Training",
        "",
        f"- recipe: `{cfg.recipe}` (task: {cfg.task.kind}; labels: {', '.join(cfg.task.labels)})"
        + ("; with teacher rationales (distilling step-by-step), alpha "
           f"{cfg.train.rationale_alpha}" if cfg.task.get("rationale") else ""),
        f"- training data: {meta.get('train_rows')} rows labeled by {meta.get('trained_on', 'the teacher')}, "
        f"{meta.get('dev_rows')} more as the dev split (seed pool: `{cfg.data.seed.path}`)",
        *([f"- cleaning: {meta['cleaning']['dropped']} of {meta['cleaning']['rows']} teacher rows left out by "
           f"`train.clean.method={meta['cleaning']['method']}` (listed in cleaning.json)"] if meta.get("cleaning") else []),
        f"- data hashes (sha256 of ids and labels): train `{hashes.get('train')}`, dev `{hashes.get('dev')}`, "
        f"gold `{hashes.get('gold')}`",
        f"- gold (held out, human; never trained on): `{cfg.data.gold.path}`",
        f"- {meta.get('steps')} steps on {meta.get('world_size')} process(es), final loss "
        f"{_num(meta.get('train_loss'), '.4f')}; best dev loss {_num(meta.get('best_dev_loss'), '.4f')}",
        f"- weights hash: `{meta.get('adapter_hash')}`",
        *(["- attention: bidirectional (`student.bidirectional`): a decoder trained to let every token see "
           "the whole text. `distill label` applies it; elsewhere pass a 4D attention mask of zeros for the "
           "real tokens and the dtype's minimum for padding, or the model attends causally and tags badly"]
          if cfg.student.get("bidirectional") else []),
        *([f"- capitals: each capitalized word is followed by `{cfg.student.case_marker}` (twice after an "
           "all-capitals word; `student.case_marker`), as the uncased tokenizer would lose them. `distill label` "
           "adds them; elsewhere add them to the words before tokenizing"] if cfg.student.get("case_marker") else []),
        "",
        f"## Dev split (labels by {meta.get('trained_on', 'the teacher')})",
        "",
        f"- agreement with {meta.get('trained_on', 'the teacher')}: {_num(meta.get('dev_agreement'))}",
        f"- calibration: temperature scaling, T = {calib.get('temperature', 1.0)}, fitted on "
        f"{calib.get('dev_rows', 0)} dev rows; expected calibration error {_num(calib.get('ece_before'))} "
        f"before, {_num(calib.get('ece_after'))} after. `distill label` applies it; to apply it yourself, "
        "divide the logits by T before the softmax.",
    ]
    if monitor:
        body += ["", "## Scores against human gold", "", "| system | " + " | ".join(monitor["headline"]) + " |",
                 "|---|" + "---|" * len(monitor["headline"])]
        for name, m in monitor["systems"].items():
            body.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in monitor["headline"]) + " |")
    paths = []
    for folder, library in (("adapter", "peft"), ("merged", "transformers")):
        if not (student_dir / folder).exists():
            continue
        head = ["---", f"library_name: {library}", f"base_model: {meta.get('base_model')}",
                "tags: [distill, distillation" + (", lora" if folder == "adapter" else "") + "]", "---"]
        path = student_dir / folder / "README.md"
        path.write_text("\n".join(head + body) + "\n")
        paths.append(path)
    return paths
