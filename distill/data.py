"""Reading seed pool, corpus and gold through `datasets`, and the run directory's label files.

Every row comes out in one shape: `id` (the source's, or a content hash), `text`, `tokens` for
token-level tasks, and `label` when the split carries human labels.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd

from distill.errors import DataError
from distill.tasks import Task
from distill.tasks.ner import iob2

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
           ".conll": "conll", ".txt": "conll"}

datasets.disable_progress_bars()


def content_id(text: str, occurrence: int = 0) -> str:
    key = text if occurrence == 0 else f"{text}\x00{occurrence}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def read_conll(path: Path, token_index: int = 0, tag_index: int = -1) -> datasets.Dataset:
    """CoNLL column file: one token per line, blank line between sentences, -DOCSTART- skipped."""
    sentences, tokens, tags, first_line = [], [], [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate([*f, ""], start=1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if tokens:
                    sentences.append({"tokens": tokens, "tags": iob2(tags), "line": first_line})
                tokens, tags = [], []
                continue
            if len(cols) < 2:
                raise DataError(f"{path} line {lineno}: expected 'token ... tag' columns, got {line.strip()!r}")
            if not tokens:
                first_line = lineno
            tokens.append(cols[token_index])
            tags.append(cols[tag_index])
    return datasets.Dataset.from_list(sentences) if sentences else datasets.Dataset.from_dict(
        {"tokens": [], "tags": [], "line": []})


def _read(path: Path, spec) -> datasets.Dataset:
    fmt = spec.get("format") or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; set format to one of "
                        f"{sorted(set(FORMATS.values()))}")
    if fmt == "conll":
        return read_conll(path, spec.get("token_index", 0), spec.get("tag_index", -1))
    if fmt in ("csv", "tsv"):
        # pandas, not the csv builder: headerless files and literal quotes in text need its options
        frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False,
                            header=None if spec.get("column_names") else "infer",
                            names=list(spec.column_names) if spec.get("column_names") else None,
                            quoting=3 if fmt == "tsv" else 0)
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    return datasets.load_dataset(fmt, data_files=str(path), split="train")


def load_split(cfg, name: str, task: Task, labels: bool | None = None) -> datasets.Dataset:
    """Load data split `name` (seed, corpus or gold) of the recipe, validated row by row.

    `labels=True` requires the split's label column, `None` reads it when configured, `False`
    ignores it.
    """
    spec = cfg.data[name]
    if not spec.get("path"):
        raise DataError(f"data.{name}.path is not set in recipe {cfg.recipe!r}")
    path = Path(spec.path)
    if not path.is_file():
        raise DataError(f"{name} data: file {path} does not exist (set data.{name}.path=...)")
    raw = _read(path, spec)
    if spec.get("limit"):
        raw = raw.select(range(min(int(spec.limit), len(raw))))
    if len(raw) == 0:
        raise DataError(f"{path}: no rows")

    token_level = task.kind == "ner"
    text_col = spec.get("tokens_column", "tokens") if token_level else spec.get("text_column", "text")
    label_col = None if labels is False else spec.get("label_column")
    if labels and not label_col:
        raise DataError(f"data.{name}.label_column is not set: the {name} split needs human labels")
    for col in [text_col, label_col, spec.get("id_column")]:
        if col and col not in raw.column_names:
            raise DataError(f"{path}: no column {col!r} (data.{name}); columns are: {', '.join(raw.column_names)}")

    rows, seen = [], Counter()
    for i, r in enumerate(raw):
        where = f"{path} row {r['line'] if 'line' in r else i + 1}"
        value = r[text_col]
        if token_level:
            if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
                raise DataError(f"{where}: field {text_col!r} must be a non-empty list of tokens")
            text = " ".join(value)
        else:
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{where}: field {text_col!r} is empty; every row needs text to label")
            text = value
        row = {"id": str(r[spec.id_column]) if spec.get("id_column") else content_id(text, seen[text]),
               "text": text}
        seen[text] += 1
        if token_level:
            row["tokens"] = list(value)
        if label_col:
            row["label"] = task.check_gold(r[label_col], f"{where} field {label_col!r}")
            if token_level and len(row["label"]) != len(row["tokens"]):
                raise DataError(f"{where}: {len(row['label'])} tags for {len(row['tokens'])} tokens")
        rows.append(row)
    return datasets.Dataset.from_list(rows)


def check_held_out(gold_texts, other_texts, other_name: str) -> None:
    """Gold must be held out: no gold text may appear in the seed pool or the training data."""
    others = set(" ".join(t.split()) for t in other_texts)
    overlap = [t for t in gold_texts if " ".join(t.split()) in others]
    if overlap:
        shown = "; ".join(repr(t[:60]) for t in overlap[:3])
        raise DataError(f"{len(overlap)} gold rows also appear in the {other_name} (first: {shown}). "
                        "Gold must be held out: remove them from one side.")


# -- label files in the run directory ---------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def write_parquet(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(rows).to_parquet(tmp, index=False)
    tmp.replace(path)


def read_parquet(path: Path) -> list[dict]:
    if not path.exists():
        raise DataError(f"{path} does not exist: run the stage that writes it first")
    frame = pd.read_parquet(path)
    return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
