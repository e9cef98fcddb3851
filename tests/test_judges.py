"""Judge backends against a local fake server (real google-genai and openai clients), the SQLite cache, the retry
policy and the factory. No test touches the internet."""
from __future__ import annotations

import base64
import io
import logging
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fake_llm_server import FakeLLMServer, error, malformed, reply, sleep_then_reply
from mmalign_utils.judges.base import JudgeConfigError, JudgeError, JudgeReply, JudgeRequest, ScriptedJudge, \
    TransientJudgeError
from mmalign_utils.judges.cache import SQLiteJudgeCache
from mmalign_utils.judges.factory import make_judge, register_backend
from mmalign_utils.judges.gemini import GeminiJudge
from mmalign_utils.judges.openai_compat import OpenAICompatJudge
from mmalign_utils.judges.retry import RetryingJudge, RetryPolicy, call_with_retries

KEY = "sk-test-SECRET-4f1c9a"  # a fake key: tests check it reaches the server and nowhere else

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def red_square() -> Image.Image:
    return Image.new("RGB", (8, 8), (255, 0, 0))


# --- cache ----------------------------------------------------------------------------------------------------------

def test_cache_miss_then_hit_and_what_is_stored(tmp_path):
    cache = SQLiteJudgeCache(tmp_path / "c.sqlite")
    judge = ScriptedJudge(["first", "second"], cache=cache)
    request = JudgeRequest.from_prompt("rate this")
    assert judge.complete(request).text == "first"
    again = judge.complete(request)
    assert (again.text, again.cached) == ("first", True)
    assert len(judge.requests) == 1  # the second call never reached the judge
    assert (cache.hits, cache.misses) == (1, 1)
    row = sqlite3.connect(tmp_path / "c.sqlite").execute(
        "SELECT judge_id, repeat, text, input_tokens, output_tokens, created FROM replies").fetchone()
    assert row[:5] == ("scripted:test", 0, "first", 0, 0)
    assert abs(row[5] - time.time()) < 60


def test_cache_key_separates_repeat_decoding_and_judge(tmp_path):
    cache = SQLiteJudgeCache(tmp_path / "c.sqlite")
    judge = ScriptedJudge(lambda r: f"call {len(judge.requests)}", cache=cache)
    base = JudgeRequest.from_prompt("same prompt")
    variants = [{"repeat": 1}, {"temperature": 0.7}, {"max_tokens": 5}, {"response_schema": {"type": "object"}},
                {"tag": "another tag"}]
    texts = [judge.complete(r).text for r in [base] + [JudgeRequest.from_prompt("same prompt", **v) for v in variants]]
    # the last request differs only in its tag, which is not part of the key: a hit on the first
    assert texts == ["call 1", "call 2", "call 3", "call 4", "call 5", "call 1"]
    other = ScriptedJudge(["other judge"], judge_id="scripted:other", cache=cache)
    assert other.complete(base).text == "other judge"


def test_cache_key_includes_image_bytes(tmp_path):
    cache = SQLiteJudgeCache(tmp_path / "c.sqlite")
    judge = ScriptedJudge(lambda r: f"call {len(judge.requests)}", cache=cache)
    red = JudgeRequest.from_prompt("colour?", images=[red_square()])
    blue = JudgeRequest.from_prompt("colour?", images=[Image.new("RGB", (8, 8), (0, 0, 255))])
    assert [judge.complete(r).text for r in (red, blue, red)] == ["call 1", "call 2", "call 1"]


def test_cache_persists_across_instances_and_is_wal(tmp_path):
    path = tmp_path / "c.sqlite"
    request = JudgeRequest.from_prompt("q")
    SQLiteJudgeCache(path).put("j", request, JudgeReply(text="kept", judge_id="j", input_tokens=3, output_tokens=4))
    reopened = SQLiteJudgeCache(path).get("j", request)
    assert (reopened.text, reopened.input_tokens, reopened.output_tokens, reopened.cached) == ("kept", 3, 4, True)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_first_reply_wins(tmp_path):
    cache = SQLiteJudgeCache(tmp_path / "c.sqlite")
    request = JudgeRequest.from_prompt("q")
    cache.put("j", request, JudgeReply(text="first", judge_id="j"))
    cache.put("j", request, JudgeReply(text="second", judge_id="j"))
    assert cache.get("j", request).text == "first"
    assert len(cache) == 1


def test_cache_from_many_threads(tmp_path):
    cache = SQLiteJudgeCache(tmp_path / "c.sqlite")
    failures = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                request = JudgeRequest.from_prompt(f"thread {t} prompt {i}")
                cache.put("j", request, JudgeReply(text=f"{t}/{i}", judge_id="j"))
                assert cache.get("j", request).text == f"{t}/{i}"
        except Exception as exc:  # noqa: BLE001 (collect to assert in the main thread)
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(cache) == 150


def test_cache_survives_sigkill(tmp_path):
    path = tmp_path / "c.sqlite"
    code = (
        "import os, signal\n"
        "from mmalign_utils.judges.base import JudgeReply, JudgeRequest\n"
        "from mmalign_utils.judges.cache import SQLiteJudgeCache\n"
        f"cache = SQLiteJudgeCache({str(path)!r})\n"
        "for i in range(5):\n"
        "    cache.put('j', JudgeRequest.from_prompt(f'p{i}'), JudgeReply(text=f'r{i}', judge_id='j'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL
    cache = SQLiteJudgeCache(path)
    assert [cache.get("j", JudgeRequest.from_prompt(f"p{i}")).text for i in range(5)] == [f"r{i}" for i in range(5)]


# --- Gemini backend ---------------------------------------------------------------------------------------------------

def test_gemini_sends_key_header_images_schema_and_records_tokens(server, keys, tmp_path):
    server.script.append(reply('{"ok": true}', input_tokens=120, output_tokens=30))
    judge = GeminiJudge("gemini-test", base_url=server.url, cache=SQLiteJudgeCache(tmp_path / "c.sqlite"))
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    request = JudgeRequest(messages=[{"role": "system", "content": "be strict"}, {"role": "user", "content": "look"}],
                           images=[red_square()], temperature=0.0, max_tokens=77, response_schema=schema)
    result = judge.complete(request)
    assert (result.text, result.input_tokens, result.output_tokens) == ('{"ok": true}', 120, 30)
    sent = server.log[-1]
    assert sent.api == "gemini" and sent.model == "gemini-test"
    assert sent.headers["x-goog-api-key"] == KEY
    config = sent.body["generationConfig"]
    assert config["maxOutputTokens"] == 77 and config["temperature"] == 0.0
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == schema
    assert sent.body["systemInstruction"]["parts"][0]["text"] == "be strict"
    parts = sent.body["contents"][-1]["parts"]
    inline = parts[0].get("inlineData") or parts[0].get("inline_data")
    assert inline["mime_type" if "mime_type" in inline else "mimeType"] == "image/png"
    decoded = Image.open(io.BytesIO(base64.urlsafe_b64decode(inline["data"])))
    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert parts[1]["text"] == "look"
    assert KEY not in repr(judge)


def test_gemini_maps_http_failures(server, keys):
    judge = GeminiJudge("gemini-test", base_url=server.url, timeout_s=10)
    impatient = GeminiJudge("gemini-test", base_url=server.url, timeout_s=0.3)  # only for the timeout case
    request = JudgeRequest.from_prompt("x")
    server.script.append(error(429, retry_after=2.5))
    with pytest.raises(TransientJudgeError) as info:
        judge.complete(request)
    assert (info.value.status, info.value.retry_after) == (429, 2.5)
    server.script.append(error(503))
    with pytest.raises(TransientJudgeError):
        judge.complete(request)
    server.script.append(malformed())
    with pytest.raises(TransientJudgeError, match="unreadable"):
        judge.complete(request)
    server.script.append(sleep_then_reply(1.0))
    with pytest.raises(TransientJudgeError):
        impatient.complete(request)
    server.script.append(error(400))
    with pytest.raises(JudgeError) as info:
        judge.complete(request)
    assert not isinstance(info.value, TransientJudgeError)
    server.script.append(error(401, message=f"API key {KEY} not valid"))  # a server that echoes the key back
    with pytest.raises(JudgeConfigError) as info:
        judge.complete(request)
    assert "GEMINI_API_KEY" in str(info.value) and KEY not in str(info.value)


# --- OpenAI-compatible backend ----------------------------------------------------------------------------------------

def test_openai_sends_bearer_key_data_url_and_schema(server, keys):
    server.script.append(reply("fine", input_tokens=50, output_tokens=5))
    judge = OpenAICompatJudge("gpt-test", base_url=server.url + "/v1")
    schema = {"type": "object"}
    result = judge.complete(JudgeRequest.from_prompt("look", system="sys", images=[red_square()], max_tokens=33,
                                                     response_schema=schema))
    assert (result.text, result.input_tokens, result.output_tokens) == ("fine", 50, 5)
    sent = server.log[-1]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["max_tokens"] == 33  # a non-OpenAI server gets the classic field
    assert sent.body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "judge_reply", "schema": schema, "strict": False}}
    user = sent.body["messages"][1]["content"]
    assert user[0]["type"] == "image_url" and user[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user[1] == {"type": "text", "text": "look"}
    assert sent.body["messages"][0] == {"role": "system", "content": "sys"}
    assert KEY not in repr(judge)


def test_openai_maps_http_failures_and_redacts(server, keys):
    judge = OpenAICompatJudge("gpt-test", base_url=server.url + "/v1", timeout_s=10)
    impatient = OpenAICompatJudge("gpt-test", base_url=server.url + "/v1", timeout_s=0.3)
    request = JudgeRequest.from_prompt("x")
    for action, client in ((error(429, retry_after=1), judge), (error(500), judge), (malformed(), judge),
                           (sleep_then_reply(1.0), impatient)):
        server.script.append(action)
        with pytest.raises(TransientJudgeError):
            client.complete(request)
    server.script.append(error(403, message=f"bad key {KEY}"))
    with pytest.raises(JudgeConfigError) as info:
        judge.complete(request)
    assert "OPENAI_API_KEY" in str(info.value) and KEY not in str(info.value)


def test_openai_local_server_needs_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = make_judge(f"openai:local-model@{server.url}/v1")
    assert judge.complete_text("hi") == "ok"
    assert server.log[-1].headers["authorization"] == "Bearer EMPTY"
    assert judge.judge_id == f"openai:local-model@{server.url}/v1"


# --- retry policy ---------------------------------------------------------------------------------------------------

def test_backoff_delays_by_hand():
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.0)
    assert [policy.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.delay(0, retry_after=3.0) == 3.0  # the server's hint is a lower bound
    jittered = RetryPolicy(base_delay=1.0, max_delay=100.0, jitter=0.5)
    waits = [jittered.delay(2) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 6.0 and len(set(waits)) > 100


def test_call_with_retries_against_server_honours_retry_after(server, keys):
    # the timeout is long enough for a loaded machine to answer the other requests in time
    judge = GeminiJudge("gemini-test", base_url=server.url, timeout_s=1.0)
    server.script += [error(429, retry_after=0.25), error(500), sleep_then_reply(2.0), reply("finally")]
    seen = []
    policy = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=1.0, jitter=0.0)
    result = call_with_retries(lambda: judge.complete(JudgeRequest.from_prompt("x")), policy,
                               on_retry=lambda n, err, wait: seen.append((n, err.status, wait)))
    assert result.text == "finally"
    assert len(server.log) == 4
    assert [s[:2] for s in seen] == [(0, 429), (1, 500), (2, None)]
    assert seen[0][2] == 0.25
    assert server.log[1].started - server.log[0].started >= 0.25


def test_retries_run_out():
    judge = ScriptedJudge(lambda r: (_ for _ in ()).throw(TransientJudgeError("busy", status=503)))
    wrapped = RetryingJudge(judge, RetryPolicy(max_retries=2, base_delay=0.001, jitter=0.0))
    with pytest.raises(TransientJudgeError):
        wrapped.complete(JudgeRequest.from_prompt("x"))
    assert len(judge.requests) == 3 and wrapped.retries == 2


def test_non_transient_errors_are_not_retried():
    judge = ScriptedJudge(lambda r: (_ for _ in ()).throw(JudgeError("HTTP 400: bad image")))
    with pytest.raises(JudgeError):
        RetryingJudge(judge, RetryPolicy(max_retries=5, base_delay=0.001)).complete(JudgeRequest.from_prompt("x"))
    assert len(judge.requests) == 1


# --- factory and secrets ----------------------------------------------------------------------------------------------

def test_factory_specs(server, keys, tmp_path):
    gemini = make_judge(f"gemini:gemini-test@{server.url}", cache_path=tmp_path / "c.sqlite")
    assert isinstance(gemini, GeminiJudge) and gemini.judge_id == "gemini:gemini-test"
    assert isinstance(gemini.cache, SQLiteJudgeCache)
    assert gemini.complete_text("hi") == "ok" and gemini.complete_text("hi") == "ok"
    assert len(server.log) == 1  # second answer came from the cache
    assert make_judge("openai:gpt-4o-mini").judge_id == "openai:gpt-4o-mini"
    assert make_judge("scripted:echo").complete_text("say this") == "say this"
    assert make_judge("scripted:const:{}").complete_text("anything") == "{}"
    assert make_judge("scripted:mine", replies=["a"]).complete_text("q") == "a"
    assert isinstance(make_judge("scripted:echo", retry=RetryPolicy()), RetryingJudge)
    with pytest.raises(JudgeConfigError, match="unknown judge spec"):
        make_judge("claude:opus")
    register_backend("tests-fixed", lambda rest, cache=None, **kw: ScriptedJudge([rest], judge_id="t", cache=cache))
    assert make_judge("tests-fixed:hello").complete_text("q") == "hello"


@pytest.mark.parametrize("spec, env", [("gemini:gemini-2.5-flash", "GEMINI_API_KEY"),
                                       ("openai:gpt-4o-mini", "OPENAI_API_KEY")])
def test_missing_key_names_the_env_var(monkeypatch, spec, env):
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(JudgeConfigError, match=env):
        make_judge(spec)


def test_key_never_in_cache_logs_or_errors(server, keys, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.script += [error(500, message=f"echo {KEY}"), reply("ok")]
    for spec in (f"gemini:gemini-test@{server.url}", f"openai:gpt-test@{server.url}/v1"):
        judge = make_judge(spec, cache_path=tmp_path / "c.sqlite", retry=RetryPolicy(base_delay=0.001))
        judge.complete(JudgeRequest.from_prompt("hello", images=[red_square()]))
        assert KEY not in repr(judge) and KEY not in str(vars(judge)) and KEY not in str(vars(judge.inner))
    assert all(KEY in (r.headers.get("x-goog-api-key", "") + r.headers.get("authorization", "")) for r in server.log)
    for path in tmp_path.iterdir():  # the database and its WAL file
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text


# --- local transformers backend ---------------------------------------------------------------------------------------

def _tiny_llama():
    """A 1-layer random Llama and a word-level tokenizer with a chat template, built in memory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>", "user", "assistant", "system", ":", "rate", "this", "answer", "good", "bad"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=1, pad_token_id=0, bos_token_id=None)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.mark.slow  # imports transformers: several seconds on a busy machine
def test_local_judge_is_greedy_and_counts_tokens():
    from mmalign_utils.judges.local import LocalTransformersJudge

    model, tokenizer = _tiny_llama()
    judge = LocalTransformersJudge(model, tokenizer, judge_id="local:tiny")
    request = JudgeRequest.from_prompt("rate this answer", max_tokens=6)
    first, second = judge.complete(request), judge.complete(request)
    assert first.text == second.text  # greedy: deterministic
    prompt_ids = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    # the template renders "user : rate this answer assistant :", 7 words in the vocabulary
    assert first.input_tokens == len(prompt_ids) == 7
    assert 1 <= first.output_tokens <= 6
    with pytest.raises(ValueError, match="processor"):
        judge.complete(JudgeRequest.from_prompt("rate", images=[red_square()]))


@pytest.mark.slow
def test_local_judge_vision_path_hands_images_to_the_processor(tmp_path):
    from mmalign_utils.judges.local import LocalTransformersJudge

    model, tokenizer = _tiny_llama()

    class RecordingProcessor:  # the part of a transformers processor the judge uses
        image_processor = object()
        chat_template = "set"

        def __init__(self):
            self.tokenizer = tokenizer
            self.conversations, self.images = [], []

        def apply_chat_template(self, conversation, add_generation_prompt, tokenize):
            self.conversations.append(conversation)
            return "user : rate this answer assistant :"

        def __call__(self, text, images, return_tensors):
            self.images.append(images)
            return tokenizer(text, return_tensors=return_tensors)

    processor = RecordingProcessor()
    path = tmp_path / "grey.png"
    Image.new("L", (4, 4), 128).save(path)
    judge = LocalTransformersJudge(model, processor)
    judge.complete(JudgeRequest.from_prompt("rate this", images=[red_square(), str(path)], max_tokens=2))
    user_turn = processor.conversations[0][-1]
    assert user_turn["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "rate this"}]
    sent = processor.images[0]
    assert [(im.mode, im.size) for im in sent] == [("RGB", (8, 8)), ("RGB", (4, 4))]
