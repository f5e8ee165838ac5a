"""A SQLite cache of paid teacher replies, keyed on everything that determines the reply.

Only successful HTTP replies are stored (a malformed answer was still paid for, so it is kept;
a 429, a 500 or a timeout is not). The engine asks anew for an invalid answer that a later run
finds here: the new reply replaces it and its cost adds to the key's, so `spent` counts both.
Each reply is committed before its row is written out, so a process killed at any moment loses
no paid reply. WAL mode keeps readers and the writer apart.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path


def request_key(body: dict) -> str:
    """Hash of (model, messages, parameters, output schema): the API key is never part of it."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process
        self.db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, "
                        "reply TEXT NOT NULL, cost_usd REAL, created REAL)")
        # scopes idempotency keys to this cache: a rerun repeats them, another cache does not
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('nonce', ?)", (uuid.uuid4().hex,))
        self.nonce = self.db.execute("SELECT value FROM meta WHERE name = 'nonce'").fetchone()[0]

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def has(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            found.update(k for (k,) in self.db.execute(
                f"SELECT key FROM replies WHERE key IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def put(self, key: str, model: str, reply: dict, cost_usd: float | None) -> None:
        self.put_many([(key, model, reply, cost_usd)])

    def put_many(self, items) -> None:
        now = time.time()
        with self.db:  # one transaction
            self.db.executemany("INSERT INTO replies VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                                "model = excluded.model, reply = excluded.reply, created = excluded.created, "
                                "cost_usd = COALESCE(replies.cost_usd, 0) + COALESCE(excluded.cost_usd, 0)",
                                [(k, m, json.dumps(r), c, now) for k, m, r, c in items])

    def meta(self, name: str, value: str | None = None) -> str | None:
        """A note kept beside the replies (e.g. a format the endpoint refused); written when `value` is given."""
        if value is not None:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def spent(self) -> float:
        """USD of every reply billed into this cache: re-asks, rows later failed or over budget included."""
        return self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM replies").fetchone()[0]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def spent(path: str | Path) -> float:
    """USD billed into the cache at `path` (0 when there is none yet)."""
    if not Path(path).exists():
        return 0.0
    cache = Cache(path)
    try:
        return cache.spent()
    finally:
        cache.close()
