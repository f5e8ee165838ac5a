"""The run directory: every file in it, named once beside the stage that writes it, and the one
resume rule every stage follows.

Stages talk through these files (one way: each reads what the stages before it wrote). They name
them through `RunDir` and never join file names themselves; tests/test_layout.py checks that.
Inside some folders the owner lays out the rest: the student kind its weights (student/adapter,
student/merged), the Trainer its checkpoints, shards.py the label shards of labels/{split}/.

Resume works at two levels:
- rows: the teacher appends each answer to its JSONL file and skips the ids the file holds, and
  the label shards skip the ids already written, so a killed stage asks and labels only the rest;
- steps: a step (a training run, a labeled split, a grow or refine round, an audit generation)
  works in a folder of its own. `resume` stamps the folder with what the step's outputs depend on
  before any work, and the step writes its record last and whole (`finish`): it is done once that
  record exists under the same stamp. A folder stamped otherwise is started afresh, saying what
  changed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from distill.data import read_json, write_atomic


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # every stage: the resolved config it ran with (config.save_config)
    config = property(lambda self: self.root / "config.yaml")

    # teach: the teacher's answers for each split (seed, gold), their shortlists, a summary
    teacher_dir = property(lambda self: self.root / "teacher")

    def teacher(self, split: str) -> Path:
        return self.teacher_dir / f"{split}.jsonl"

    teacher_shortlists = property(lambda self: self.teacher_dir / "shortlists.jsonl")
    teacher_summary = property(lambda self: self.teacher_dir / "summary.json")

    # train: the student folder (StudentDir names its files)
    student = property(lambda self: self.root / "student")
    student_files = property(lambda self: StudentDir(self.student))

    # label: each split's shards (shards.py lays them out) and the table joined from them
    def label_shards(self, split: str) -> Path:
        return self.root / "labels" / split

    def labels(self, split: str) -> Path:
        return self.root / "labels" / f"{split}.parquet"

    labels_summary = property(lambda self: self.root / "labels" / "summary.json")

    # route: the teacher's answers to the routed rows and to the audit slice; review files
    routed_answers = property(lambda self: self.root / "labels" / "teacher" / "corpus.jsonl")
    audit_slice = property(lambda self: self.root / "labels" / "teacher" / "audit.jsonl")
    review = property(lambda self: Review(self.root / "labels" / "review"))

    # cascade: the replayed curve on gold, the threshold picked, its plot
    cascade_curve = property(lambda self: self.root / "cascade" / "curve.json")
    cascade_threshold = property(lambda self: self.root / "cascade" / "threshold.json")
    cascade_plot = property(lambda self: self.root / "cascade" / "curve.png")

    # shortlist: the size picked for task.shortlist, and its plot
    shortlist = property(lambda self: self.root / "shortlist" / "shortlist.json")
    shortlist_plot = property(lambda self: self.root / "shortlist" / "shortlist.png")

    # monitor: metrics against gold, the HTML report, the history of every batch
    metrics = property(lambda self: self.root / "monitor" / "metrics.json")
    report = property(lambda self: self.root / "monitor" / "report.html")
    history = property(lambda self: self.root / "monitor" / "history.sqlite")
    monitor_log = property(lambda self: self.root / "monitor" / "summary.txt")  # its printout, when the audit runs it

    # grow, refine, audit: folders of their own
    grow = property(lambda self: Grow(self.root / "grow"))
    refine = property(lambda self: Refine(self.root / "refine"))
    audit = property(lambda self: Audit(self.root / "audit"))


@dataclass(frozen=True)
class Review:
    """labels/review (route): rows for people to check, for Label Studio and for Argilla."""
    dir: Path

    def label_studio(self, split: str) -> Path:
        return self.dir / f"{split}.label_studio.json"

    def argilla(self, split: str) -> Path:
        return self.dir / f"{split}.argilla.jsonl"

    label_config = property(lambda self: self.dir / "label_config.xml")
    argilla_settings = property(lambda self: self.dir / "argilla_settings.json")


@dataclass(frozen=True)
class StudentDir:
    """A student folder, written by `train.fit`; the student kind lays out the weights inside."""
    dir: Path

    record = property(lambda self: Path(self.dir) / "student.json")  # written last: the student is whole
    calibration = property(lambda self: Path(self.dir) / "calibration.json")
    cleaning = property(lambda self: Path(self.dir) / "cleaning.json")
    checkpoints = property(lambda self: Path(self.dir) / "checkpoints")


@dataclass(frozen=True)
class Round:
    """round{k} of grow or refine: a step of its own, done once `record` is written."""
    dir: Path

    record = property(lambda self: self.dir / "round.json")
    train_rows = property(lambda self: self.dir / "train_rows.jsonl")  # what its student learned from
    student = property(lambda self: self.dir / "student")


class GrowRound(Round):
    predictions = property(lambda self: self.dir / "predictions.parquet")  # its student's label for every corpus row
    candidates = property(lambda self: self.dir / "candidates.jsonl")  # the questions, written last of the scoring
    judge = property(lambda self: self.dir / "judge.jsonl")  # the teacher's verdicts
    accepted = property(lambda self: self.dir / "accepted.jsonl")


class RefineRound(Round):
    predictions = property(lambda self: self.dir / "predictions.jsonl")  # headed by the student's weights hash
    asked = property(lambda self: self.dir / "asked.jsonl")  # the rows picked, written before any is sent


@dataclass(frozen=True)
class Grow:
    """grow/ (distill grow): the teacher writes and checks texts, then rounds judge the student's picks."""
    dir: Path

    def round(self, k: int) -> GrowRound:
        return GrowRound(self.dir / f"round{k}")

    superseded = property(lambda self: self.dir / "superseded")  # rounds of other rows or settings, paid for
    author = property(lambda self: self.dir / "author.jsonl")
    check = property(lambda self: self.dir / "check.jsonl")
    shortlists = property(lambda self: self.dir / "shortlists.jsonl")
    synthetic = property(lambda self: self.dir / "synthetic.jsonl")
    judgments = property(lambda self: self.dir / "judgments.jsonl")
    ledger = property(lambda self: self.dir / "ledger.json")
    summary = property(lambda self: self.dir / "grow.json")


@dataclass(frozen=True)
class Refine:
    """refine/ (distill refine): rounds of routing the least sure rows and retraining on the answers."""
    dir: Path

    def round(self, k: int) -> RefineRound:
        return RefineRound(self.dir / f"round{k}")

    audit_slice = property(lambda self: self.dir / "audit.jsonl")
    answers = property(lambda self: self.dir / "answers.jsonl")
    final_predictions = property(lambda self: self.dir / "final_predictions.jsonl")
    labels = property(lambda self: self.dir / "corpus.parquet")
    ledger = property(lambda self: self.dir / "ledger.json")
    summary = property(lambda self: self.dir / "refine.json")


@dataclass(frozen=True)
class Audit:
    """audit/ (distill audit): one run directory per generation, and the verdicts."""
    dir: Path

    def generation(self, key: str) -> Generation:  # "gen0", "replace/gen3", ...
        return Generation(self.dir / key)

    summary = property(lambda self: self.dir / "audit.json")
    page = property(lambda self: self.dir / "audit.html")


@dataclass(frozen=True)
class Generation(RunDir):
    """A generation of the collapse audit: a run directory of its own, and a step (`record`)."""

    record = property(lambda self: self.root / "generation.json")
    train_rows = property(lambda self: self.root / "train_rows.jsonl")


# -- resume: one rule for every step --------------------------------------------------------------

def stamp_text(fingerprint: dict) -> str:
    return json.dumps(fingerprint, sort_keys=True, indent=1, default=str)


def resume(folder: Path, fingerprint: dict, changed: str, record: Path | None = None, supersede: bool = False,
           also: tuple[Path, ...] = ()) -> dict:
    """Where a step in `folder` stands: its record (`record`, written last by `finish`) when it
    finished with this same `fingerprint` (what its outputs depend on), else {}. A folder stamped
    with another fingerprint is started afresh first, with the files in `also`, printing `changed`
    and what differs; with `supersede` it is moved to superseded/ beside it instead of removed
    (what it paid for still counts). Partial work under the same stamp stays, to resume from."""
    folder = Path(folder)
    stamp, text = folder / "fingerprint.json", stamp_text(fingerprint)
    if stamp.exists() and stamp.read_text() != text:
        print(f"{changed} ({changes(json.loads(stamp.read_text()), json.loads(text))})")
        move_aside(folder) if supersede else shutil.rmtree(folder)
        for path in also:
            Path(path).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(stamp, text)
    return read_json(record) if record is not None else {}


def finish(record: Path, content: dict) -> dict:
    """Write a step's record, whole or not at all: the step is done once it exists."""
    write_atomic(record, json.dumps(content, indent=2))
    return content


def move_aside(folder: Path) -> Path:
    """Move `folder` to superseded/{name}.{n} beside it."""
    target = folder.parent / "superseded" / folder.name
    n = 1
    while target.with_name(f"{folder.name}.{n}").exists():
        n += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.move(str(folder), str(target.with_name(f"{folder.name}.{n}"))))


def _flat(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()} or {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def changes(old: dict, new: dict, shown: int = 4) -> str:
    """What differs between two fingerprints, as 'key: old -> new' (long values shortened)."""
    def short(v):
        text = json.dumps(v, default=str)
        return text if len(text) <= 40 else text[:18] + "..." + text[-18:]
    a, b = _flat(old), _flat(new)
    diffs = [f"{k}: {short(a.get(k, '(none)'))} -> {short(b.get(k, '(none)'))}"
             for k in sorted(a.keys() | b.keys()) if a.get(k, "(none)") != b.get(k, "(none)")]
    return "; ".join(diffs[:shown]) + (f"; and {len(diffs) - shown} more" if len(diffs) > shown else "")
