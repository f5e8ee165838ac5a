"""Monitor history: one SQLite row per (recipe, student, corpus batch, gold set), for trends, the
CUSUM over gold audits, and the previous student's gold predictions as a paired baseline. A rerun
of the same audit replaces its row rather than adding one, so reruns never move the trends."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    recipe TEXT NOT NULL,
    student TEXT,
    baseline TEXT,
    corpus_batch TEXT NOT NULL,
    gold TEXT NOT NULL,
    gold_rows INTEGER,
    metrics TEXT,        -- JSON: the student's gold metrics, CIs, label mix, label-free estimate
    tests TEXT,          -- JSON: every test with its p-values and effects
    alerts TEXT,         -- JSON: the alerts raised
    predictions TEXT,    -- JSON: {gold id: [label, confidence]} of the student
    UNIQUE (recipe, student, corpus_batch, gold)
)"""
JSON_COLUMNS = ("metrics", "tests", "alerts", "predictions")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.row_factory = sqlite3.Row
    db.execute(SCHEMA)
    return db


def record(path: Path, run: dict) -> int:
    """Add the run, or update the one with the same recipe, student, corpus batch and gold in place."""
    values = {k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in run.items()}
    cols = list(values)
    update = ", ".join(f"{c}=excluded.{c}" for c in cols)
    with closing(_connect(Path(path))) as db, db:
        db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                   f"ON CONFLICT (recipe, student, corpus_batch, gold) DO UPDATE SET {update}",
                   [values[c] for c in cols])
        key = (run["recipe"], run["student"], run["corpus_batch"], run["gold"])
        return int(db.execute("SELECT id FROM runs WHERE recipe=? AND student IS ? AND corpus_batch=? AND gold=?",
                              key).fetchone()[0])


def runs(path: Path, recipe: str) -> list[dict]:
    """The recipe's runs, oldest first, JSON columns decoded."""
    if not Path(path).exists():
        return []
    with closing(_connect(Path(path))) as db:
        rows = db.execute("SELECT * FROM runs WHERE recipe=? ORDER BY id", (recipe,)).fetchall()
    return [{k: (json.loads(r[k]) if k in JSON_COLUMNS and r[k] is not None else r[k]) for k in r.keys()}
            for r in rows]
