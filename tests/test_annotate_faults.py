"""The annotator with the real google-genai and openai clients against the fake server: injected 429/5xx/timeouts/
malformed bodies are retried with backoff, invalid replies are re-asked then quarantined, the key stays out of
every file and log, and a run killed with SIGKILL resumes without asking again for anything already decided."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from fake_llm_server import FakeLLMServer, error, malformed, reply, sleep_then_reply
from mmalign_utils.annotate import annotate, load_annotations, load_quarantine
from mmalign_utils.judges.factory import make_judge
from mmalign_utils.judges.gemini import GeminiJudge

KEY = "AIza-fake-SECRET-77c2e1"
REPO = Path(__file__).resolve().parents[1]


def scores_reply(item_number: int, k: int = 4) -> str:
    """A valid reply whose scores encode the item, so the test can check each item got its own reply."""
    ratings = [{"answer": i, "helpfulness": item_number % 5, "correctness": i - 1, "coherence": 4, "complexity": 1,
                "verbosity": 2} for i in range(1, k + 1)]
    return json.dumps({"reasoning": f"item {item_number}", "ratings": ratings})


def item_number(prompt: str) -> int:
    return int(re.search(r"item-(\d+)", prompt).group(1))


def write_items(directory: Path, n: int) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n):
        path = directory / f"img{i}.png"
        Image.new("RGB", (6, 6), (i * 5 % 256, 0, 0)).save(path)
        items.append({"item_id": f"item-{i:02d}", "image": str(path), "question": f"Describe item-{i:02d}.",
                      "answers": [f"a{j}" for j in range(4)]})
    return items


@pytest.fixture
def server():
    with FakeLLMServer(responder=lambda request: scores_reply(item_number(request.prompt_text))) as s:
        yield s


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


FAST = {"base_delay": 0.001, "max_delay": 0.05, "progress": False}


def test_gemini_transient_faults_are_retried_then_annotated(server, tmp_path):
    items = write_items(tmp_path / "img", 1)
    server.script += [error(429, retry_after=0.2), error(500), sleep_then_reply(2.0), malformed(),
                      reply(scores_reply(0))]
    judge = GeminiJudge("gemini-fake", base_url=server.url, timeout_s=1.0)  # > any answer time on a busy machine
    summary = annotate(items, judge, tmp_path / "out", max_retries=5, **FAST)
    assert summary["this_run"]["annotated"] == 1 and summary["this_run"]["transient_retries"] == 4
    assert [r.outcome for r in server.log] == ["error 429", "error 500", "sleep", "malformed", "reply"]
    assert server.log[1].started - server.log[0].started >= 0.2  # Retry-After honoured
    assert all(r.n_images == 1 for r in server.log)
    [row] = load_annotations(tmp_path / "out")
    assert row["judge_id"] == "gemini:gemini-fake" and row["reasoning"] == "item 0"


def test_retries_exhausted_leave_item_for_later(server, tmp_path):
    items = write_items(tmp_path / "img", 1)
    server.script += [error(503)] * 3
    judge = make_judge(f"openai:gpt-fake@{server.url}/v1")
    summary = annotate(items, judge, tmp_path / "out", max_retries=2, **FAST)
    assert summary["this_run"]["failed"] == 1 and len(server.log) == 3
    assert load_quarantine(tmp_path / "out") == []
    annotate(items, judge, tmp_path / "out", **FAST)  # the server is healthy again
    assert len(load_annotations(tmp_path / "out")) == 1 and len(server.log) == 4


def test_invalid_replies_get_fresh_requests_then_quarantine(server, tmp_path):
    items = write_items(tmp_path / "img", 3)
    broken = 'Answer 1 is best. {"ratings": [{"answer": 1, "helpfulness": 9'
    asked = {}

    def responder(request):
        n = item_number(request.prompt_text)
        asked[n] = asked.get(n, 0) + 1
        if n == 1:
            return broken  # always broken
        if n == 2 and asked[n] == 1:
            return scores_reply(2, k=3)  # wrong number of answers once
        return scores_reply(n)

    server.responder = responder
    judge = make_judge(f"openai:gpt-fake@{server.url}/v1")
    summary = annotate(items, judge, tmp_path / "out", max_invalid_retries=2, **FAST)
    # the cache holds every reply, so only a new repeat index can make a second request reach the server
    assert asked == {0: 1, 1: 3, 2: 2}
    assert summary["this_run"]["annotated"] == 2 and summary["this_run"]["quarantined"] == 1
    [quarantined] = load_quarantine(tmp_path / "out")
    assert quarantined["item_id"] == "item-01" and quarantined["raw"] == broken
    assert "no JSON object" in quarantined["reason"]
    annotate(items, judge, tmp_path / "out", **FAST)
    assert sum(asked.values()) == 6  # a rerun asks nothing: every item is decided


def test_key_travels_as_header_only(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    items = write_items(tmp_path / "img", 2)
    server.script += [error(429, message=f"quota for key {KEY} exceeded")]
    for spec in (f"gemini:gemini-fake@{server.url}", f"openai:gpt-fake@{server.url}/v1"):
        annotate(items, make_judge(spec), tmp_path / spec.split(":")[0], **FAST)
    assert {r.headers.get("x-goog-api-key") for r in server.log if r.api == "gemini"} == {KEY}
    assert {r.headers.get("authorization") for r in server.log if r.api == "openai"} == {f"Bearer {KEY}"}
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "img" not in p.parts]
    assert any(p.name.endswith("-wal") or p.suffix == ".sqlite" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text


RUNNER = """
import json, sys
from mmalign_utils.annotate import annotate
from mmalign_utils.judges.factory import make_judge
spec, items_file, out_dir = sys.argv[1:4]
items = json.load(open(items_file))
annotate(items, make_judge(spec), out_dir, concurrency=2, base_delay=0.001, max_delay=0.05,
         max_invalid_retries=1, progress=False)
"""


def _decided(out_dir: Path) -> tuple[set[str], set[str]]:
    db = out_dir / "annotations.sqlite"
    if not db.exists():
        return set(), set()
    conn = sqlite3.connect(db, timeout=10)
    try:
        annotated = {r[0] for r in conn.execute("SELECT item_id FROM annotations")}
        quarantined = {r[0] for r in conn.execute("SELECT item_id FROM quarantine")}
    except sqlite3.OperationalError:  # tables not created yet
        return set(), set()
    finally:
        conn.close()
    return annotated, quarantined


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_asks_nothing_twice(server, tmp_path):
    n_items, bad = 40, {3, 17, 31}
    items = write_items(tmp_path / "img", n_items)
    (tmp_path / "items.json").write_text(json.dumps(items))
    out_dir = tmp_path / "out"
    delay = {"s": 0.08}

    def responder(request):
        n = item_number(request.prompt_text)
        text = "I cannot decide." if n in bad else scores_reply(n)
        return sleep_then_reply(delay["s"], text)

    server.responder = responder
    spec = f"gemini:gemini-fake@{server.url}"
    stderr = open(tmp_path / "runner.stderr", "w+")
    process = subprocess.Popen([sys.executable, "-c", RUNNER, spec, str(tmp_path / "items.json"), str(out_dir)],
                               cwd=REPO, env={**os.environ, "GEMINI_API_KEY": KEY}, stderr=stderr)
    deadline = time.monotonic() + 60
    while len(_decided(out_dir)[0]) < 8:
        assert process.poll() is None, f"runner ended early: {(tmp_path / 'runner.stderr').read_text()[-2000:]}"
        assert time.monotonic() < deadline, "runner made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stderr.close()
    time.sleep(0.3)  # let requests already on the wire reach the log
    annotated_at_kill, quarantined_at_kill = _decided(out_dir)
    seen_at_kill = len(server.log)
    assert len(annotated_at_kill) < n_items - len(bad), "the run finished before the kill: nothing tested"

    delay["s"] = 0.005
    summary = annotate(items, make_judge(spec), out_dir, concurrency=2, max_invalid_retries=1, base_delay=0.001,
                       progress=False)
    assert summary["skipped_already_done"] == len(annotated_at_kill | quarantined_at_kill)

    annotated = {row["item_id"]: row for row in load_annotations(out_dir)}
    quarantined = {row["item_id"] for row in load_quarantine(out_dir)}
    assert set(annotated) | quarantined == {item["item_id"] for item in items}
    assert quarantined == {f"item-{n:02d}" for n in bad}
    for item_id, row in annotated.items():  # every item got its own reply
        assert row["reasoning"] == f"item {int(item_id[5:])}"
    # a request cut off by the kill reaches the server without a readable body: it asked for nothing
    log = [(position, item_number(r.prompt_text), r.outcome) for position, r in enumerate(server.log)
           if r.outcome != "unreadable request"]
    later = [n for position, n, _ in log if position >= seen_at_kill]
    decided_numbers = {int(i[5:]) for i in annotated_at_kill | quarantined_at_kill}
    assert not decided_numbers & set(later), "an item decided before the kill was asked again"
    # Beyond that: no item is asked again after the server gave it a valid reply, except at most the requests in
    # flight at the kill (answered by the server but killed before the reply reached the judge cache).
    first_valid = {}
    for position, n, outcome in log:
        if n not in bad and outcome == "sleep" and n not in first_valid:
            first_valid[n] = position
    asked_again = {n for position, n, _ in log if n in first_valid and position > first_valid[n]}
    assert len(asked_again) <= 2, asked_again
