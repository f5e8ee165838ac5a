"""Reading seed pool, corpus and gold through `datasets`, and the run directory's label files.

Every row comes out in one shape: `id` (the source's, or a content hash), `text`, `tokens` for
token-level tasks, and `label` when the split carries human labels.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
from omegaconf import OmegaConf

from distill.config import SPLIT_KEYS
from distill.demo import write_demo
from distill.errors import DataError
from distill.schema import FORMATS
from distill.tasks import Task

SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
            ".conll": "conll", ".txt": "conll"}  # each a format of schema.FORMATS

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
                    yield {"tokens": tokens, "tags": tags, "line": first_line}
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


def _format(path: Path, spec) -> str | None:
    return spec.get("format") or SUFFIXES.get(path.suffix.lower())


def data_files(path) -> list[Path]:
    """The files a split's `path` names: one file, or every file a glob pattern matches
    (`folds/fold1[0-4].json`), in name order."""
    path = Path(path)
    if glob.has_magic(str(path)) and not path.is_file():  # a file named with brackets is a file
        return [Path(p) for p in sorted(glob.glob(str(path)))]
    return [path]


def _read(path: Path, files: list[Path], spec) -> datasets.Dataset:
    """The files as one Arrow dataset on disk (memory-mapped): a corpus larger than RAM is fine.
    Several files keep, per row, the file (`__file`) and its row there (`line`) for messages."""
    fmt = _format(path, spec)
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; set format to one of "
                        f"{list(FORMATS)}")
    if len(files) == 1:
        return _read_one(files[0], fmt, spec)
    parts = []
    for f in files:
        part = _read_one(f, fmt, spec)
        if "line" not in part.column_names:
            part = part.add_column("line", list(range(1, len(part) + 1)))
        parts.append(part.add_column("__file", [str(f)] * len(part)))
    return datasets.concatenate_datasets(parts)


def _read_one(path: Path, fmt: str, spec) -> datasets.Dataset:
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


def prepare_data(cfg) -> None:
    """Write the built-in demo data when the recipe asks for it and it is not there yet."""
    if cfg.data.get("demo"):
        write_demo(cfg.data.demo.name, Path(cfg.data.demo.dir), dict(cfg.data.demo.sizes), cfg.seed)


def _plain(cfg):
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def _bounds(value, name: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)  # the schema checked 0 <= lo < hi <= 1
    return lo, hi


def text_key(text) -> str:
    """A text (or a token list) up to whitespace: how splits are compared."""
    return " ".join(text if isinstance(text, list) else str(text).split())


def _without_gold(cfg, task: Task, raw: datasets.Dataset, name: str, text_col: str, path: Path) -> datasets.Dataset:
    """`data.drop_gold_overlap`: leave out the rows whose text is also a gold text. Public datasets
    repeat short lines across their splits (CoNLL-2003's "Scorers :", AG News's duplicates)."""
    gold = {text_key(t) for t in load_split(cfg, "gold", task, labels=False)["text"]}
    kept = raw.filter(lambda texts: [text_key(t) not in gold for t in texts], input_columns=text_col,
                      batched=True, batch_size=10_000)
    if len(kept) < len(raw):
        print(f"{name} data: {len(raw) - len(kept)} rows of {path} also in gold left out (data.drop_gold_overlap)")
    return kept


def _in_slice(texts: list, bounds: tuple[float, float]) -> list[bool]:
    """Whether each text's hash falls in [lo, hi): one file cut into disjoint splits, with every
    copy of a repeated text (up to whitespace) on the same side."""
    lo, hi = bounds
    keys = map(text_key, texts)
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
    path, files = Path(spec.path), data_files(spec.path)
    if not files:
        raise DataError(f"{name} data: no file matches {path} (set data.{name}.path=...)")
    for f in files:
        if not f.is_file():
            raise DataError(f"{name} data: file {f} does not exist (set data.{name}.path=...)")
        if f.stat().st_size == 0:
            raise DataError(f"{f}: the file is empty (data.{name}.path)")
    try:
        raw = _read(path, files, spec)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the reader raises, the user needs the file and the reason
        cause = e.__cause__ if isinstance(e, datasets.exceptions.DatasetGenerationError) and e.__cause__ else e
        if isinstance(cause, DataError):
            raise cause from None
        if isinstance(cause, UnicodeDecodeError):
            raise _encoding_error(path, files) from None
        if isinstance(cause, ValueError) and "corresponds to no data" in str(cause):
            raise DataError(f"{path}: no rows") from None
        if _format(path, spec) == "json" and (bad := next(filter(None, map(_bad_json_line, files)), None)):
            raise bad from None
        raise DataError(f"{path}: cannot be read as {spec.get('format') or path.suffix}: {cause}") from None
    text_col = task.input_column(spec)
    label_col = None if labels is False else spec.get("label_column")
    if labels and not label_col:
        raise DataError(f"data.{name}.label_column is not set: the {name} split needs human labels")
    id_col = spec.get("id_column")
    for col in [text_col, label_col, id_col]:
        if col and col not in raw.column_names:
            hint = next((f"; the header looks {d!r}-separated, but {spec.get('format') or path.suffix} files are "
                         f"read {'tab' if path.suffix == '.tsv' else 'comma'}-separated" for d in ";\t|"
                         if len(raw.column_names) == 1 and d in raw.column_names[0]), "")
            raise DataError(f"{path}: no column {col!r} (data.{name}); columns are: {', '.join(raw.column_names)}{hint}")
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
    max_chars = int(spec.get("max_chars") or SPLIT_KEYS["max_chars"])
    first_row: dict[str, str] = {}  # id from id_column -> the row it first appeared on

    def validate(batch: dict, indices: list[int]) -> dict:
        out = {"id": [], "text": [], **{k: [] for k in task.input_fields()}, **({"label": []} if label_col else {})}
        repeats = []
        for j, i in enumerate(indices):
            row = str(batch['line'][j] if 'line' in batch else i + 1)
            where = f"{batch['__file'][j] if '__file' in batch else path} row {row}"
            fields = task.read_input(batch[text_col][j], where, text_col)
            text = fields["text"]
            for k in task.input_fields():
                out[k].append(fields[k])
            if len(text) > max_chars:
                raise DataError(f"{where}: field {text_col!r} is {len(text):,} characters, more than "
                                f"data.{name}.max_chars ({max_chars:,}); split or drop it")
            if id_col:
                out["id"].append(str(batch[id_col][j]))
                if out["id"][-1] in first_row:
                    repeats.append(f"{out['id'][-1]!r} (rows {first_row[out['id'][-1]]} and {row})")
                first_row.setdefault(out["id"][-1], row)
            else:
                key = content_id(text)  # a repeated text's later copies hash with their occurrence
                out["id"].append(key if not seen[key] else content_id(text, seen[key]))
                seen[key] += 1
            out["text"].append(text)
            if label_col:
                out["label"].append(task.check_gold(batch[label_col][j], f"{where} field {label_col!r}", fields))
        if repeats:  # raised inside the map, so no cache of the bad split is ever kept
            raise DataError(f"{path}: {len(repeats)} repeated ids in column {id_col!r} (data.{name}.id_column), "
                            f"first: {', '.join(repeats[:3])}; every row needs its own id")
        return out

    # the cache key: the raw data's fingerprint and everything validation depends on
    key = json.dumps([raw._fingerprint, name, label_col, _plain(spec), _plain(task.cfg), "v4"], sort_keys=True, default=str)
    try:
        return raw.map(validate, batched=True, with_indices=True, remove_columns=raw.column_names,
                       batch_size=10_000, new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32])
    except UnicodeDecodeError:  # pyarrow reads JSON bytes as they are; decoding a row finds them
        raise _encoding_error(path, files) from None


def _bad_json_line(path: Path) -> DataError | None:
    """The first line of a JSONL file that is not a JSON object (read only once a reader has failed on it)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                return DataError(f"{path} line {lineno}: not valid JSON ({e.msg}, column {e.colno})")
            if not isinstance(row, dict):
                return DataError(f"{path} line {lineno}: expected a JSON object per line, got {type(row).__name__}")
    return None


def _not_utf8(path: Path) -> DataError | None:
    """Which line of `path` is not UTF-8 (read only once a reader has failed on it)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(f"{path} line {lineno}: not UTF-8 text (byte {line[e.start:e.start + 1]!r} at column "
                                 f"{e.start + 1}); save the file as UTF-8")
    return None


def _encoding_error(path: Path, files: list[Path]) -> DataError:
    return next(filter(None, map(_not_utf8, files)), DataError(f"{path}: not UTF-8 text; save it as UTF-8"))


def check_held_out(gold_texts, other_texts, other_name: str) -> None:
    """Gold must be held out: no gold text may appear in the seed pool or the training data."""
    others = set(map(text_key, other_texts))
    overlap = [t for t in gold_texts if text_key(t) in others]
    if overlap:
        shown = "; ".join(repr(t[:60]) for t in overlap[:3])
        raise DataError(f"{len(overlap)} gold rows also appear in the {other_name} (first: {shown}). "
                        "Gold must be held out: remove them from one side.")


# -- label files in the run directory ---------------------------------------------------------

_HASHES: dict[tuple, str] = {}  # (path, size, mtime) -> SHA-256, so a file is read once per process


def file_stamp(path) -> dict:
    """Size and SHA-256 of a data file (of every file a glob pattern matches, together): what a
    stage's results depend on besides its config. A copied or touched file keeps its stamp; an
    edited one does not."""
    files = data_files(path)
    if files != [Path(path)]:
        stamps = [file_stamp(f) for f in files]
        together = hashlib.sha256("".join(s["sha256"] for s in stamps).encode()).hexdigest()
        return {"files": len(files), "bytes": sum(s["bytes"] for s in stamps), "sha256": together}
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return {"bytes": stat.st_size, "sha256": _HASHES[key]}


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


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a kill at any moment leaves the old file or the new one."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the half-written `*.tmp` files a killed run left in `run_dir`; return them."""
    found = sorted(Path(run_dir).rglob("*.tmp")) if Path(run_dir).is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def read_json(path: Path) -> dict:
    """A JSON file of the run directory; {} when it is not there (yet)."""
    return json.loads(Path(path).read_text()) if Path(path).exists() else {}


def read_parquet(path: Path, columns: list[str] | None = None) -> list[dict]:
    if not path.exists():
        raise DataError(f"{path} does not exist: run the stage that writes it first")
    frame = pd.read_parquet(path, columns=columns)
    return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}
            for row in frame.to_dict("records")]
