"""Where annotation results live: one SQLite file (WAL, synchronous=FULL) under the run's out_dir.

Rows are only ever inserted, each in its own committed transaction, so a killed run loses at most the items that
were in flight, and a rerun can skip everything already decided. Tables:
  annotations  item_id -> scores (JSON), reasoning, raw reply, judge id   (the first success wins)
  quarantine   item_id -> reason, last raw reply, every attempt (JSON)     (items the judge could not rate)
  calls        one row per judge reply: tokens, cost, cached or not        (the ledger)
  contents     item_id -> SHA-256 of its question and answers                (what was judged under that id)
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from mmalign_utils.judges.cache import connect_wal

DB_NAME = "annotations.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    item_id TEXT PRIMARY KEY, judge_id TEXT NOT NULL, scores TEXT NOT NULL, reasoning TEXT NOT NULL,
    raw TEXT NOT NULL, tries INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    item_id TEXT PRIMARY KEY, judge_id TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL,
    attempts TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, judge_id TEXT NOT NULL, repeat INTEGER NOT NULL,
    valid INTEGER NOT NULL, cached INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cost_usd REAL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS contents (item_id TEXT PRIMARY KEY, content_sha256 TEXT NOT NULL);
"""


class AnnotationStore:
    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = connect_wal(self.path)
        self._lock = threading.Lock()  # one connection shared by the worker threads; writes are tiny
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, params: tuple) -> None:
        with self._lock:
            self._conn.execute(sql, params)  # autocommit: durable when this returns

    def annotated_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT item_id FROM annotations")}

    def quarantined_ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT item_id FROM quarantine")}

    def content_hashes(self) -> dict[str, str]:
        with self._lock:
            return dict(self._conn.execute("SELECT item_id, content_sha256 FROM contents"))

    def save_content_hashes(self, hashes: dict[str, str]) -> None:
        """Record each item's content the first time it is submitted (later calls keep the first)."""
        with self._lock, self._conn:  # one transaction for the whole list
            self._conn.executemany("INSERT OR IGNORE INTO contents VALUES (?, ?)", list(hashes.items()))

    def save_annotation(self, item_id: str, judge_id: str, scores: list[dict], reasoning: str, raw: str,
                        tries: int) -> None:
        self._write("INSERT OR IGNORE INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (item_id, judge_id, json.dumps(scores), reasoning, raw, tries, time.time()))

    def save_quarantine(self, item_id: str, judge_id: str, reason: str, raw: str, attempts: list[dict]) -> None:
        self._write("INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?)",
                    (item_id, judge_id, reason, raw, json.dumps(attempts), time.time()))

    def record_call(self, item_id: str, judge_id: str, repeat: int, valid: bool, cached: bool, input_tokens: int,
                    output_tokens: int, cost: float | None) -> None:
        self._write("INSERT INTO calls (item_id, judge_id, repeat, valid, cached, input_tokens, output_tokens, "
                    "cost_usd, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (item_id, judge_id, repeat, int(valid), int(cached), input_tokens, output_tokens, cost,
                     time.time()))

    def ledger_totals(self) -> dict[str, dict]:
        """Per judge id over every run in this out_dir: calls, cached calls, tokens and cost of uncached calls."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT judge_id, COUNT(*), SUM(cached), SUM(CASE WHEN cached THEN 0 ELSE input_tokens END), "
                "SUM(CASE WHEN cached THEN 0 ELSE output_tokens END), SUM(cost_usd), "
                "SUM(CASE WHEN cost_usd IS NULL AND NOT cached THEN 1 ELSE 0 END) FROM calls GROUP BY judge_id"
            ).fetchall()
        return {judge_id: {"calls": calls, "cached_calls": cached, "input_tokens": tin or 0, "output_tokens": tout or 0,
                           "cost_usd": round(cost or 0.0, 6), "calls_without_price": unpriced}
                for judge_id, calls, cached, tin, tout, cost, unpriced in rows}


def read_rows(out_dir: str | Path, sql: str) -> list[tuple]:
    """Read-only query of a finished (or running) store; raises FileNotFoundError naming the missing file."""
    path = Path(out_dir) / DB_NAME
    if not path.exists():
        raise FileNotFoundError(f"no annotation store at {path}: run annotate(..., out_dir={str(out_dir)!r}) first")
    conn = connect_wal(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
