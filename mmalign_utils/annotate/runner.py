"""`annotate(items, judge, out_dir)`: rate every item's k answers with one judge request each, safely.

Per item: build the request (rubric.py), ask the judge (retrying 429/5xx/timeouts with backoff and jitter),
validate the reply (schema.py). An invalid reply is asked again with the next repeat index, so the judge cache
does not hand back the same bad text; after `max_invalid_retries` the item is quarantined with the raw text and
the reason. Results go to SQLite as they arrive (store.py), so a rerun after a crash or kill skips every item
already annotated or quarantined. Items whose transient retries run out are left undecided for the next run.
The store remembers each item's question and answers (a hash), and a rerun whose items carry other answers under
the same ids is refused rather than given the old scores.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from mmalign_utils.annotate.ledger import DEFAULT_PRICES_PER_MILLION, cost_usd, model_of
from mmalign_utils.annotate.rubric import build_request
from mmalign_utils.annotate.schema import InvalidReply, parse_reply
from mmalign_utils.annotate.store import AnnotationStore, read_rows
from mmalign_utils.judges.base import Judge, JudgeConfigError, JudgeError, JudgeReply, JudgeRequest, \
    TransientJudgeError
from mmalign_utils.judges.cache import SQLiteJudgeCache
from mmalign_utils.judges.retry import RetryPolicy, call_with_retries

logger = logging.getLogger("mmalign.annotate")

CACHE_NAME = "judge_cache.sqlite"
SUMMARY_NAME = "summary.json"


class RateLimiter:
    """At most `requests_per_minute` starts per minute, evenly spaced, shared by all worker threads."""

    def __init__(self, requests_per_minute: float | None):
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def content_hash(item: Mapping[str, Any]) -> str:
    """SHA-256 of what the judge rates under an item id: the question and the answers, in order."""
    text = json.dumps({"question": item["question"], "answers": list(item["answers"])}, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def check_same_content(store: AnnotationStore, items: list[Mapping[str, Any]]) -> None:
    """Refuse to reuse a store whose items were judged with other questions or answers under the same ids (say,
    samples drawn again at another temperature): their old scores would be read as the new answers' scores."""
    hashes = {str(item["item_id"]): content_hash(item) for item in items}
    stored = store.content_hashes()
    changed = sorted(item_id for item_id, digest in hashes.items() if stored.get(item_id, digest) != digest)
    if changed:
        raise ValueError(f"{store.path} holds judgements of other questions or answers for {len(changed)} of these "
                         f"item ids (first: {changed[:5]}): the items changed since (sampled again with other "
                         "settings, another model or prompt set?). Annotate them into another out_dir, or delete "
                         "that folder to judge everything again.")
    store.save_content_hashes(hashes)


def check_items(items: list[Mapping[str, Any]], k: int) -> None:
    """Raise one ValueError listing every malformed item (first 20), before any judge call is paid for."""
    problems, seen = [], set()
    for position, item in enumerate(items):
        item_id = item.get("item_id") if isinstance(item, Mapping) else None
        label = f"item #{position} (item_id={item_id!r})"
        if not isinstance(item, Mapping):
            problems.append(f"item #{position}: not a dict")
            continue
        if item_id is None or str(item_id) == "":
            problems.append(f"{label}: no item_id")
        elif str(item_id) in seen:
            problems.append(f"{label}: duplicate item_id")
        seen.add(str(item_id))
        if not isinstance(item.get("question"), str) or not item["question"].strip():
            problems.append(f"{label}: question missing or empty")
        answers = item.get("answers")
        if not isinstance(answers, (list, tuple)) or len(answers) != k:
            problems.append(f"{label}: needs exactly k={k} answers, has "
                            f"{len(answers) if isinstance(answers, (list, tuple)) else 'none'}")
        elif not all(isinstance(a, str) for a in answers):
            problems.append(f"{label}: every answer must be a string")
        image = item.get("image")
        if isinstance(image, (str, os.PathLike)):
            if not Path(image).exists():
                problems.append(f"{label}: image file {image} does not exist")
        elif image is not None and not isinstance(image, bytes) and not hasattr(image, "save"):
            problems.append(f"{label}: image must be a PIL image, a file path, bytes or None, "
                            f"not {type(image).__name__}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{len(problems)} problem(s) in the items to annotate; nothing was sent:\n  {shown}{more}")


class _Run:
    """The state one annotate() call shares between its worker threads."""

    def __init__(self, judge: Judge, store: AnnotationStore, cache, k: int, policy: RetryPolicy,
                 limiter: RateLimiter, max_invalid_retries: int, temperature: float,
                 invalid_retry_temperature: float | None, max_tokens: int, prices: Mapping):
        self.judge, self.store, self.cache, self.k = judge, store, cache, k
        self.policy, self.limiter = policy, limiter
        self.max_invalid_retries, self.temperature = max_invalid_retries, temperature
        self.invalid_retry_temperature, self.max_tokens = invalid_retry_temperature, max_tokens
        self.prices = prices
        self.model = model_of(judge.judge_id)
        self.counts = {"annotated": 0, "quarantined": 0, "failed": 0, "calls": 0, "cache_hits": 0,
                       "transient_retries": 0, "invalid_replies": 0, "input_tokens": 0, "output_tokens": 0}
        self.cost = 0.0
        self.failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                self.counts[name] += delta

    def complete(self, request: JudgeRequest) -> JudgeReply:
        """One judge reply: from the cache if there, else through the rate limiter to the judge."""
        if self.cache is not None:
            hit = self.cache.get(self.judge.judge_id, request)
            if hit is not None:
                return hit
        self.limiter.wait()
        reply = self.judge.complete(request)
        if self.cache is not None and self.cache is not self.judge.cache and not reply.cached:
            self.cache.put(self.judge.judge_id, request, reply)
        return reply

    def annotate_one(self, item: Mapping[str, Any]) -> str:
        item_id = str(item["item_id"])
        attempts: list[dict] = []

        def on_retry(number: int, error: TransientJudgeError, wait_s: float) -> None:
            self.add(transient_retries=1)
            logger.info("item %s: %s; retry %d in %.2fs", item_id, error, number + 1, wait_s)

        for invalid_try in range(self.max_invalid_retries + 1):
            temperature = self.temperature if invalid_try == 0 or self.invalid_retry_temperature is None \
                else self.invalid_retry_temperature
            request = build_request(item, self.k, repeat=invalid_try, temperature=temperature,
                                    max_tokens=self.max_tokens)
            try:
                reply = call_with_retries(lambda: self.complete(request), self.policy, on_retry=on_retry)
            except TransientJudgeError as error:
                with self._lock:
                    self.failures[item_id] = str(error)
                self.add(failed=1)
                logger.warning("item %s: giving up for this run after %d retries: %s", item_id,
                               self.policy.max_retries, error)
                return "failed"
            except JudgeConfigError:
                raise
            except JudgeError as error:  # this request was refused (e.g. HTTP 400): retrying will not help
                self.store.save_quarantine(item_id, self.judge.judge_id, f"judge refused the request: {error}", "",
                                           attempts + [{"repeat": invalid_try, "error": str(error)}])
                self.add(quarantined=1)
                return "quarantined"
            try:
                parsed = parse_reply(reply.text, self.k)
                reason = None
            except InvalidReply as error:
                parsed, reason = None, str(error)
            cost = 0.0 if reply.cached else cost_usd(self.model, reply.input_tokens, reply.output_tokens, self.prices)
            self.store.record_call(item_id, self.judge.judge_id, invalid_try, parsed is not None, reply.cached,
                                   reply.input_tokens, reply.output_tokens, cost)
            self.add(calls=1, cache_hits=int(reply.cached),
                     input_tokens=0 if reply.cached else reply.input_tokens,
                     output_tokens=0 if reply.cached else reply.output_tokens)
            with self._lock:
                self.cost += cost or 0.0
            if parsed is not None:
                self.store.save_annotation(item_id, self.judge.judge_id, parsed.scores, parsed.reasoning,
                                           reply.text, invalid_try + 1)
                self.add(annotated=1)
                return "annotated"
            self.add(invalid_replies=1)
            attempts.append({"repeat": invalid_try, "reason": reason, "raw": reply.text})
            logger.info("item %s: invalid reply (%s); asking again with repeat %d", item_id, reason, invalid_try + 1)
        last = attempts[-1]
        self.store.save_quarantine(item_id, self.judge.judge_id,
                                   f"invalid reply {len(attempts)} times; last: {last['reason']}", last["raw"],
                                   attempts)
        logger.warning("item %s quarantined: %s", item_id, last["reason"])
        self.add(quarantined=1)
        return "quarantined"


def annotate(items: Iterable[Mapping[str, Any]], judge: Judge, out_dir: str | Path, k: int = 4,
             concurrency: int = 4, requests_per_minute: float | None = None, max_retries: int = 6,
             base_delay: float = 1.0, max_delay: float = 60.0, max_invalid_retries: int = 2,
             temperature: float = 0.0, invalid_retry_temperature: float | None = None, max_tokens: int = 8192,
             prices: Mapping[str, tuple[float, float]] | None = None, use_cache: bool = True,
             retry_quarantined: bool = False, progress: bool = True) -> dict:
    """Annotate `items` ({item_id, image (PIL, path or None), question, answers: k strings, ...}) into `out_dir`.

    concurrency: worker threads (requests in flight). requests_per_minute: spacing of request starts (None: none).
    max_retries, base_delay, max_delay: backoff for 429/5xx/timeouts (see judges.retry.RetryPolicy).
    max_invalid_retries: extra requests (next repeat index) after an invalid reply before quarantining.
    invalid_retry_temperature: temperature for those extra requests (None: same as `temperature`).
    prices: {model: (USD per 1M input tokens, per 1M output tokens)}; defaults in ledger.py.
    use_cache: keep every reply in out_dir/judge_cache.sqlite when the judge has no cache of its own.
    retry_quarantined: also retry items quarantined by an earlier run.
    Returns the summary also written to out_dir/summary.json. Raises JudgeConfigError (bad key, unknown model)
    at once, since no item can succeed then.
    """
    out_dir = Path(out_dir)
    items = list(items)
    check_items(items, k)
    store = AnnotationStore(out_dir)
    try:
        check_same_content(store, items)
    except ValueError:
        store.close()
        raise
    cache = judge.cache if judge.cache is not None else (SQLiteJudgeCache(out_dir / CACHE_NAME) if use_cache else None)
    run = _Run(judge, store, cache, k, RetryPolicy(max_retries=max_retries, base_delay=base_delay,
                                                   max_delay=max_delay),
               RateLimiter(requests_per_minute), max_invalid_retries, temperature, invalid_retry_temperature,
               max_tokens, prices if prices is not None else DEFAULT_PRICES_PER_MILLION)
    done = store.annotated_ids() | (set() if retry_quarantined else store.quarantined_ids())
    todo = [item for item in items if str(item["item_id"]) not in done]
    started = time.monotonic()
    try:
        _run_all(run, todo, max(1, concurrency), progress)
    finally:
        summary = _summary(run, store, len(items), len(items) - len(todo), time.monotonic() - started)
        _write_json(out_dir / SUMMARY_NAME, summary)
        store.close()
        if cache is not None and cache is not judge.cache:
            cache.close()
    return summary


def _run_all(run: _Run, todo: list[Mapping[str, Any]], concurrency: int, progress: bool) -> None:
    from mmalign_utils.progress import progress_bar

    bar = progress_bar(total=len(todo), desc=f"annotate ({run.judge.judge_id})", unit="item", disable=not progress)
    pending: set[Future] = set()
    queue = iter(todo)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="annotate") as pool:
        try:
            while True:
                while len(pending) < 2 * concurrency:  # bounded look-ahead: images are not all loaded at once
                    item = next(queue, None)
                    if item is None:
                        break
                    pending.add(pool.submit(run.annotate_one, item))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # re-raises JudgeConfigError and bugs: stop the run
                    bar.update(1)
                bar.set_postfix(quarantined=run.counts["quarantined"], failed=run.counts["failed"],
                                cost=f"${run.cost:.4f}", refresh=False)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()


def _summary(run: _Run, store: AnnotationStore, total: int, skipped: int, elapsed: float) -> dict:
    return {
        "judge_id": run.judge.judge_id,
        "items": total,
        "skipped_already_done": skipped,
        "this_run": {**run.counts, "cost_usd": round(run.cost, 6), "elapsed_s": round(elapsed, 3),
                     "failed_items": dict(sorted(run.failures.items()))},
        "store": {"annotated": len(store.annotated_ids()),
                  "quarantined": len(store.quarantined_ids() - store.annotated_ids())},
        "ledger_all_runs": store.ledger_totals(),
    }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_annotations(out_dir: str | Path) -> list[dict]:
    """Every annotated item, in the order they were saved: {item_id, scores: [{attribute: 0-4}]*k, reasoning,
    judge_id, raw}."""
    rows = read_rows(out_dir, "SELECT item_id, scores, reasoning, judge_id, raw FROM annotations ORDER BY rowid")
    return [{"item_id": item_id, "scores": json.loads(scores), "reasoning": reasoning, "judge_id": judge_id,
             "raw": raw} for item_id, scores, reasoning, judge_id, raw in rows]


def load_quarantine(out_dir: str | Path) -> list[dict]:
    """Items quarantined and not annotated since: {item_id, reason, raw, attempts: [...], judge_id}."""
    rows = read_rows(out_dir, "SELECT item_id, reason, raw, attempts, judge_id FROM quarantine "
                              "WHERE item_id NOT IN (SELECT item_id FROM annotations) ORDER BY rowid")
    return [{"item_id": item_id, "reason": reason, "raw": raw, "attempts": json.loads(attempts), "judge_id": judge_id}
            for item_id, reason, raw, attempts, judge_id in rows]
