"""Reading seed pool, corpus and gold through `datasets`, and the run directory's label files.

Every row comes out in one shape: `id` (the source's, or a content hash), `text`, `tokens` for
token-level tasks, and `label` when the split carries human labels.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
from omegaconf import OmegaConf

from distill.errors import DataError
from distill.tasks import Task
from distill.tasks.ner import iob2

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
           ".conll": "conll", ".txt": "conll"}

datasets.disable_progress_bars()


def content_id(text: str, occurrence: int = 0) -> str:
    key = text if occurrence == 0 else f"{text}\x00{occurrence}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _conll_sentences(path: str, token_index: int, tag_index: int, stamp=None):
    tokens, tags, first_line = [], [], 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(itertools.chain(f, [""]), start=1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if tokens:
                    yield {"tokens": tokens, "tags": iob2(tags), "line": first_line}
                tokens, tags = [], []
                continue
            if len(cols) < 2:
                raise DataError(f"{path} line {lineno}: expected 'token ... tag' columns, got {line.strip()!r}")
            if not tokens:
                first_line = lineno
            tokens.append(cols[token_index])
            tags.append(cols[tag_index])


def read_conll(path: Path, token_index: int = 0, tag_index: int = -1) -> datasets.Dataset:
    """CoNLL column file: one token per line, blank line between sentences, -DOCSTART- skipped."""
    features = datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "tags": datasets.List(datasets.Value("string")), "line": datasets.Value("int64")})
    stat = Path(path).stat()  # part of the cache key: an edited file is read again
    if not any(True for _ in _conll_sentences(str(path), token_index, tag_index)):
        return datasets.Dataset.from_dict({"tokens": [], "tags": [], "line": []}, features=features)
    return datasets.Dataset.from_generator(
        _conll_sentences, features=features,
        gen_kwargs={"path": str(path), "token_index": token_index, "tag_index": tag_index,
                    "stamp": (stat.st_size, stat.st_mtime_ns)})


def _read(path: Path, spec) -> datasets.Dataset:
    """The file as an Arrow dataset on disk (memory-mapped): a corpus larger than RAM is fine."""
    fmt = spec.get("format") or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; set format to one of "
                        f"{sorted(set(FORMATS.values()))}")
    if fmt == "conll":
        return read_conll(path, spec.get("token_index", 0), spec.get("tag_index", -1))
    if fmt in ("csv", "tsv"):
        kwargs = {"sep": "\t" if fmt == "tsv" else ",", "keep_default_na": False, "na_filter": False}
        if fmt == "tsv":
            kwargs["quoting"] = 3  # literal quotes inside text
        if spec.get("column_names"):
            kwargs.update(header=None, column_names=list(spec.column_names))
        columns = kwargs.get("column_names") or list(pd.read_csv(path, nrows=0, sep=kwargs["sep"]).columns)
        # every column as text, exactly as written ("007" stays "007")
        features = datasets.Features({c: datasets.Value("string") for c in columns})
        return datasets.load_dataset("csv", data_files=str(path), split="train", features=features, **kwargs)
    return datasets.load_dataset(fmt, data_files=str(path), split="train")


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def _bounds(value, name: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo, hi = 1.0, 0.0
    if not 0 <= lo < hi <= 1:
        raise DataError(f"data.{name}.slice must be [lo, hi] with 0 <= lo < hi <= 1, got {value}")
    return lo, hi


def _text_key(text) -> str:
    """A text (or a token list) up to whitespace: how splits are compared."""
    return " ".join(text if isinstance(text, list) else str(text).split())


def _without_gold(cfg, task: Task, raw: datasets.Dataset, name: str, text_col: str, path: Path) -> datasets.Dataset:
    """`data.drop_gold_overlap`: leave out the rows whose text is also a gold text. Public datasets
    repeat short lines across their splits (CoNLL-2003's "Scorers :", AG News's duplicates)."""
    gold = {_text_key(t) for t in load_split(cfg, "gold", task, labels=False)["text"]}
    kept = raw.filter(lambda texts: [_text_key(t) not in gold for t in texts], input_columns=text_col,
                      batched=True, batch_size=10_000)
    if len(kept) < len(raw):
        print(f"{name} data: {len(raw) - len(kept)} rows of {path} also in gold left out (data.drop_gold_overlap)")
    return kept


def _in_slice(texts: list, bounds: tuple[float, float]) -> list[bool]:
    """Whether each text's hash falls in [lo, hi): one file cut into disjoint splits, with every
    copy of a repeated text (up to whitespace) on the same side."""
    lo, hi = bounds
    keys = map(_text_key, texts)
    return [lo <= int(content_id(k), 16) / 16**16 < hi for k in keys]


def load_split(cfg, name: str, task: Task, labels: bool | None = None) -> datasets.Dataset:
    """Load data split `name` (seed, corpus or gold) of the recipe, validated row by row.

    `labels=True` requires the split's label column, `None` reads it when configured, `False`
    ignores it. `slice: [lo, hi]` keeps the rows whose text hashes into that share of the file
    (then `limit` keeps the first rows of those). The result is an Arrow dataset on disk, read
    lazily; the validated copy is cached beside the raw one, so a second call (or another rank)
    reuses it.
    """
    spec = cfg.data[name]
    if not spec.get("path"):
        raise DataError(f"data.{name}.path is not set in recipe {cfg.recipe!r}")
    path = Path(spec.path)
    if not path.is_file():
        raise DataError(f"{name} data: file {path} does not exist (set data.{name}.path=...)")
    try:
        raw = _read(path, spec)
    except datasets.exceptions.DatasetGenerationError as e:
        raise (e.__cause__ if isinstance(e.__cause__, DataError) else
               DataError(f"{path}: cannot be read as {spec.get('format') or path.suffix}: {e.__cause__ or e}")) from None
    token_level = task.token_level
    text_col = spec.get("tokens_column", "tokens") if token_level else spec.get("text_column", "text")
    label_col = None if labels is False else spec.get("label_column")
    if labels and not label_col:
        raise DataError(f"data.{name}.label_column is not set: the {name} split needs human labels")
    id_col = spec.get("id_column")
    for col in [text_col, label_col, id_col]:
        if col and col not in raw.column_names:
            raise DataError(f"{path}: no column {col!r} (data.{name}); columns are: {', '.join(raw.column_names)}")
    if spec.get("slice"):
        raw = raw.filter(_in_slice, input_columns=text_col, batched=True, batch_size=10_000,
                         fn_kwargs={"bounds": _bounds(spec.slice, name)})
    if name != "gold" and cfg.data.get("drop_gold_overlap"):
        raw = _without_gold(cfg, task, raw, name, text_col, path)
    if spec.get("limit"):
        raw = raw.select(range(min(int(spec.limit), len(raw))))
    if len(raw) == 0:
        raise DataError(f"{path}: no rows" + (f" in data.{name}.slice {list(spec.slice)}" if spec.get("slice") else ""))

    seen = Counter()  # occurrences of each text so far, by content id

    def validate(batch: dict, indices: list[int]) -> dict:
        out = {"id": [], "text": [], **({"tokens": []} if token_level else {}), **({"label": []} if label_col else {})}
        for j, i in enumerate(indices):
            where = f"{path} row {batch['line'][j] if 'line' in batch else i + 1}"
            value = batch[text_col][j]
            if token_level:
                if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
                    raise DataError(f"{where}: field {text_col!r} must be a non-empty list of tokens")
                text = " ".join(value)
                out["tokens"].append(list(value))
            else:
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{where}: field {text_col!r} is empty; every row needs text to label")
                text = value
            if id_col:
                out["id"].append(str(batch[id_col][j]))
            else:
                key = content_id(text)  # a repeated text's later copies hash with their occurrence
                out["id"].append(key if not seen[key] else content_id(text, seen[key]))
                seen[key] += 1
            out["text"].append(text)
            if label_col:
                label = task.check_gold(batch[label_col][j], f"{where} field {label_col!r}")
                if token_level and len(label) != len(value):
                    raise DataError(f"{where}: {len(label)} tags for {len(value)} tokens")
                out["label"].append(label)
        return out

    # the cache key: the raw data's fingerprint and everything validation depends on
    key = json.dumps([raw._fingerprint, name, label_col, _plain(spec), _plain(task.cfg), "v2"], sort_keys=True, default=str)
    return raw.map(validate, batched=True, with_indices=True, remove_columns=raw.column_names,
                   batch_size=10_000, new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32])


def check_held_out(gold_texts, other_texts, other_name: str) -> None:
    """Gold must be held out: no gold text may appear in the seed pool or the training data."""
    others = set(map(_text_key, other_texts))
    overlap = [t for t in gold_texts if _text_key(t) in others]
    if overlap:
        shown = "; ".join(repr(t[:60]) for t in overlap[:3])
        raise DataError(f"{len(overlap)} gold rows also appear in the {other_name} (first: {shown}). "
                        "Gold must be held out: remove them from one side.")


# -- label files in the run directory ---------------------------------------------------------

def file_stamp(path) -> list[int]:
    """Size and modification time of a data file: what a stage's results depend on besides its config."""
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


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


def read_json(path: Path) -> dict:
    """A JSON file of the run directory; {} when it is not there (yet)."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def start_afresh_if_changed(directory: Path, fingerprint: dict, message: str) -> bool:
    """Keep `directory` only when it was made from the same fingerprint (what its contents depend
    on); otherwise remove it, saying why. Returns whether it was removed."""
    stamp = directory / "fingerprint.json"
    text = json.dumps(fingerprint, sort_keys=True, indent=1, default=str)
    changed = stamp.exists() and stamp.read_text() != text
    if changed:
        print(message)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)
    return changed


def read_parquet(path: Path, columns: list[str] | None = None) -> list[dict]:
    if not path.exists():
        raise DataError(f"{path} does not exist: run the stage that writes it first")
    frame = pd.read_parquet(path, columns=columns)
    return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
