"""A persistent cache of judge replies in SQLite, so that no paid judge call is ever made twice.

The key is (judge id, prompt SHA-256, decoding parameters, repeat index): the same prompt asked again with
another repeat index is a new call (N-run means, or a retry after an invalid reply), not a cache hit.

Each `put` is its own committed transaction in WAL mode with synchronous=FULL, so a reply is on disk before
`put` returns and survives the process being killed. Every thread gets its own connection.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from mmalign_utils.judges.base import JudgeReply, JudgeRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    judge_id      TEXT    NOT NULL,
    prompt_hash   TEXT    NOT NULL,
    decoding_key  TEXT    NOT NULL,
    repeat        INTEGER NOT NULL,
    text          TEXT    NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    meta          TEXT    NOT NULL,  -- JSON: what the backend said besides the text (finish reason, version)
    created       REAL    NOT NULL,  -- unix time of the call
    PRIMARY KEY (judge_id, prompt_hash, decoding_key, repeat)
)
"""


def connect_wal(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode whose commits are durable; shared by the cache and the annotation store."""
    conn = sqlite3.connect(path, timeout=60.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


class SQLiteJudgeCache:
    """`judge = GeminiJudge(..., cache=SQLiteJudgeCache("judge_cache.sqlite"))`.

    `hits` and `misses` count lookups made through this object (not across processes).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._conn().execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect_wal(self.path)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @staticmethod
    def _key(judge_id: str, request: JudgeRequest) -> tuple[str, str, str, int]:
        return judge_id, request.prompt_hash(), request.decoding_key(), int(request.repeat)

    def get(self, judge_id: str, request: JudgeRequest) -> JudgeReply | None:
        row = self._conn().execute(
            "SELECT text, input_tokens, output_tokens, meta FROM replies "
            "WHERE judge_id=? AND prompt_hash=? AND decoding_key=? AND repeat=?",
            self._key(judge_id, request),
        ).fetchone()
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        if row is None:
            return None
        text, input_tokens, output_tokens, meta = row
        return JudgeReply(text=text, judge_id=judge_id, cached=True, input_tokens=input_tokens,
                          output_tokens=output_tokens, raw=json.loads(meta))

    def put(self, judge_id: str, request: JudgeRequest, reply: JudgeReply) -> None:
        """Store the first reply for a key; a second put for the same key keeps the first (it is what was seen)."""
        self._conn().execute(
            "INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*self._key(judge_id, request), reply.text, int(reply.input_tokens), int(reply.output_tokens),
             json.dumps(reply.raw, default=str, sort_keys=True), time.time()),
        )

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteJudgeCache({str(self.path)!r})"
