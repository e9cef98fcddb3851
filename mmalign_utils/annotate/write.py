"""Judge-written answers: the strong model writes its own answer to each image + question (paper §3.5's SFT
variant, next to the source data's reference answers).

One request per prompt (the image and the question, with a short writing guide), sent through the same retry
policy as the annotation and kept in the judge cache under `out_dir`, so a rerun after a crash pays only for the
answers not yet written. The ShapesWorld oracle rates answers but writes none: it refuses the task by name.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmalign_utils.judges.base import Judge, JudgeConfigError, JudgeError, JudgeRequest, TransientJudgeError
from mmalign_utils.judges.cache import SQLiteJudgeCache
from mmalign_utils.judges.retry import RetryPolicy, call_with_retries
from mmalign_utils.progress import progress_bar

WRITER_SYSTEM = """\
You write the answer an expert assistant would give to a question about an image. Look at the image carefully.
Be correct: state only what the image shows or what follows from it, and say plainly when something asked about
is not there. Be helpful: answer exactly what was asked, with the relevant detail a careful person would add.
Be clear and well ordered. Match the length to the question: one word or phrase when that is what is asked,
a few sentences for a description or an explanation. Reply with the answer only."""


def build_writer_request(item: Mapping[str, Any], max_tokens: int = 512, repeat: int = 0) -> JudgeRequest:
    """The request for one item {item_id, question, image?}: the image, the question, the writing guide."""
    image = item.get("image")
    return JudgeRequest(
        messages=[{"role": "system", "content": WRITER_SYSTEM},
                  {"role": "user", "content": f"Question: {item['question']}"}],
        images=[image] if image is not None else [], temperature=0.0, max_tokens=max_tokens, repeat=repeat,
        tag=f"write:{item['item_id']}",
        payload={"task": "write_answer", "item_id": str(item["item_id"]), "question": item["question"]})


def write_answers(items: Iterable[Mapping[str, Any]], judge: Judge, out_dir: str | Path, concurrency: int = 4,
                  policy: RetryPolicy | None = None, max_empty_retries: int = 2, progress: bool = True
                  ) -> dict[str, str]:
    """{item_id: the judge's answer} for every item. Replies are cached in the judge's own cache, or in
    `out_dir/writer_cache.sqlite` while this runs when it has none (a rerun asks only for what is missing). An empty reply is asked again under the next repeat index (so the cache does
    not hand the same one back), up to `max_empty_retries` times. An item still without an answer, or whose
    transient retries run out, fails the call with the item ids named: an SFT set with holes would silently train
    on fewer prompts than its card says."""
    if judge.judge_id.startswith("oracle:"):
        raise JudgeConfigError("the ShapesWorld oracle rates answers but writes none: write the SFT answers with an "
                               "AI judge (judge='gemini', or an openai:... spec)")
    items = list(items)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policy = policy or RetryPolicy()
    own_cache = judge.cache is None
    if own_cache:  # attached for this call only: the caller's judge is left as it was given
        judge.cache = SQLiteJudgeCache(out_dir / "writer_cache.sqlite")

    def one(item: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
        item_id = str(item["item_id"])
        for repeat in range(max_empty_retries + 1):
            request = build_writer_request(item, repeat=repeat)
            try:
                reply = call_with_retries(lambda: judge.complete(request), policy)
            except TransientJudgeError as error:
                return item_id, None, f"retries ran out: {error}"
            except JudgeError as error:
                return item_id, None, str(error)
            if reply.text.strip():
                return item_id, reply.text.strip(), None
        return item_id, None, f"empty reply {max_empty_retries + 1} times"

    answers: dict[str, str] = {}
    failed: list[tuple[str, str]] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            bar = progress_bar(pool.map(one, items), total=len(items), desc="judge writes answers",
                               disable=not progress)
            for item_id, text, problem in bar:
                if text is None:
                    failed.append((item_id, problem))
                else:
                    answers[item_id] = text
    finally:
        if own_cache:
            judge.cache = None
    if failed:
        first = "; ".join(f"{i}: {why}" for i, why in failed[:5])
        raise JudgeError(f"{len(failed)} of {len(items)} answers were not written ({first}); the written ones are "
                         f"cached, so a rerun asks only for these")
    return answers
