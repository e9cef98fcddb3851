"""Dataset formats: TRL's conversational vision format, the paper's released JSON files, LLaVA conversation JSON.

Every dataset this project trains on is a `datasets.Dataset` in TRL's conversational vision format:

- `images`: a list holding one image, cast to `Sequence(Image())`;
- preference data: `prompt` = `[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]`,
  `chosen` / `rejected` = `[{"role": "assistant", "content": [{"type": "text", "text": a}]}]`;
- SFT-style data: `messages` = the user turn above followed by the assistant turn.

The image is a content part, never the literal "<image>" text, so no model's placeholder token is hard-coded.
This module converts to that format from the files the paper released (`alexshengzhili/mllm-dpo`) and from LLaVA
conversation JSON, and back to LLaVA JSON.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, List, Value
from datasets import Image as ImageFeature
from datasets import Sequence as SequenceFeature

from mmalign_utils.helpsteer import ATTRIBUTES

# The five HelpSteer attributes, in HelpSteer's order; each is an integer 0-4.
HELPSTEER_ATTRIBUTES: tuple[str, ...] = ATTRIBUTES  # helpsteer.py holds the one definition
IMAGE_TOKEN = "<image>"

# --------------------------------------------------------------------------------------------------------------
# Features: fixed schemas, so that an empty dataset or an all-None column still has the right types.

MESSAGES_FEATURE = List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})})
IMAGES_FEATURE = SequenceFeature(ImageFeature())

ROW_ID_FEATURES = {
    "prompt_id": Value("string"),
    "image_id": Value("string"),
    "source": Value("string"),
    "question": Value("string"),
    "images": IMAGES_FEATURE,
}


def score_features(prefix: str) -> dict[str, Value]:
    """Columns `<prefix><attribute>` for the five attributes plus `<prefix>quality` (all nullable integers)."""
    cols = {f"{prefix}{attribute}": Value("int32") for attribute in HELPSTEER_ATTRIBUTES}
    cols[f"{prefix}quality"] = Value("int32")
    return cols


DPO_FEATURES = Features({
    **ROW_ID_FEATURES,
    "prompt": MESSAGES_FEATURE,
    "chosen": MESSAGES_FEATURE,
    "rejected": MESSAGES_FEATURE,
    "chosen_index": Value("int32"),
    "rejected_index": Value("int32"),
    **score_features("chosen_"),
    **score_features("rejected_"),
    "margin": Value("float64"),
})

PAPER_DPO_FEATURES = Features({
    **ROW_ID_FEATURES,
    "prompt": MESSAGES_FEATURE,
    "chosen": MESSAGES_FEATURE,
    "rejected": MESSAGES_FEATURE,
    **score_features("chosen_"),
    **score_features("rejected_"),
    "margin": Value("float64"),
    "ref_chosen_logps": Value("float64"),
    "ref_rejected_logps": Value("float64"),
    "record_index": Value("int64"),
})

LLAVA_SFT_FEATURES = Features({
    "prompt_id": Value("string"),
    "image_id": Value("string"),
    "images": IMAGES_FEATURE,
    "messages": MESSAGES_FEATURE,
    "record_index": Value("int64"),
})


def rows_to_dataset(rows: Sequence[Mapping[str, Any]], features: Features) -> Dataset:
    """A Dataset with exactly `features` (images given as PIL images or file paths are encoded by `Image()`)."""
    columns = {name: [row[name] for row in rows] for name in features}
    return Dataset.from_dict(columns, features=features)


# --------------------------------------------------------------------------------------------------------------
# Message builders (TRL conversational format).

def user_turn(text: str, n_images: int = 1) -> dict:
    """A user message with `n_images` image parts first, then the text (LLaVA puts the image before the text)."""
    return {"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def vision_prompt(question: str, n_images: int = 1) -> list[dict]:
    """The `prompt` column of a preference row: one user turn with the image part and the question."""
    return [user_turn(question, n_images)]


def completion(answer: str) -> list[dict]:
    """The `chosen` / `rejected` column of a preference row."""
    return [assistant_turn(answer)]


def sft_messages(question: str, answer: str, n_images: int = 1) -> list[dict]:
    """The `messages` column of an SFT-style row: user turn (image + question), then the assistant answer."""
    return [user_turn(question, n_images), assistant_turn(answer)]


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message, whether its content is a string or a list of parts (image parts contribute nothing)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def count_image_parts(message: Mapping[str, Any]) -> int:
    content = message["content"]
    if isinstance(content, str):
        return 0
    return sum(1 for part in content if part.get("type") == "image")


def strip_image_token(text: str) -> tuple[str, int]:
    """Remove every literal "<image>" (and the newline LLaVA puts after it); return (clean text, how many)."""
    count = text.count(IMAGE_TOKEN)
    if count:
        text = text.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "")
    return text.strip(), count


# --------------------------------------------------------------------------------------------------------------
# Trainer-facing views.

TRL_PREFERENCE_COLUMNS = ("images", "prompt", "chosen", "rejected")


def trl_preference_view(ds: Dataset, keep_ref_logps: bool = True) -> Dataset:
    """Only the columns TRL's DPO trainer reads (plus precomputed reference log-probs where present).

    Our datasets carry bookkeeping columns (ids, scores, margin); dropping them before training keeps TRL's
    collator from seeing columns it does not expect.
    """
    missing = [c for c in TRL_PREFERENCE_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"not a preference dataset: columns {missing} are missing (has {ds.column_names})")
    keep = list(TRL_PREFERENCE_COLUMNS)
    if keep_ref_logps:
        keep += [c for c in ("ref_chosen_logps", "ref_rejected_logps") if c in ds.column_names]
    return ds.select_columns(keep)


def messages_to_prompt_completion(ds: Dataset) -> Dataset:
    """Turn `messages` into TRL's prompt-completion shape: `prompt` = all turns but the last, `completion` = last.

    With prompt-completion data TRL's `completion_only_loss` trains on the answer tokens only, as LLaVA did.
    """
    if "messages" not in ds.column_names:
        raise ValueError(f"dataset has no 'messages' column (has {ds.column_names})")

    def split(messages_batch: list[list[dict]]) -> dict:
        prompts, completions = [], []
        for messages in messages_batch:
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError(f"row with messages {messages!r:.200}: the last turn must be the assistant's")
            prompts.append(messages[:-1])
            completions.append(messages[-1:])
        return {"prompt": prompts, "completion": completions}

    return ds.map(split, batched=True, input_columns=["messages"], remove_columns=["messages"])


# --------------------------------------------------------------------------------------------------------------
# The paper's released DPO file.

PAPER_CHOSEN_SUFFIX = "_gpt4v"  # legacy name: the chosen answer's scores
PAPER_REJECTED_SUFFIX = "_candidate"  # the rejected answer's scores
PAPER_SUM_FIELD = "Sum_of_helpfulness_correctness_coherence"


class PaperRecordError(ValueError):
    """A record of a released paper file is malformed; the message names the file, record index and field."""


def _parse_turn(value: Any, where: str) -> dict:
    """A LLaVA turn `{"from": ..., "value": ...}`, possibly given as a stringified dict (JSON or Python repr)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                try:
                    # The paper's loader parses this field with ast.literal_eval (a Python dict repr).
                    value = ast.literal_eval(stripped)
                except (ValueError, SyntaxError) as e:
                    raise PaperRecordError(f"{where}: a string that looks like a dict but parses as neither JSON "
                                           f"nor a Python literal ({e}): {value[:120]!r}") from None
        else:
            return {"from": None, "value": value}
    if not isinstance(value, Mapping):
        raise PaperRecordError(f"{where}: expected a {{'from', 'value'}} dict, got {type(value).__name__}")
    if "value" not in value or not isinstance(value["value"], str):
        raise PaperRecordError(f"{where}: the turn has no string 'value' (keys: {sorted(value)})")
    return {"from": value.get("from"), "value": value["value"]}


_ROLE_OF_SPEAKER = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _role(speaker: str | None, default: str, where: str) -> str:
    if speaker is None:
        return default
    role = _ROLE_OF_SPEAKER.get(str(speaker).lower())
    if role is None:
        raise PaperRecordError(f"{where}: unknown speaker {speaker!r}; expected one of {sorted(_ROLE_OF_SPEAKER)}")
    return role


def _turns_to_messages(turns: Sequence[dict], has_image: bool, where: str) -> list[dict]:
    """LLaVA turns -> TRL messages; the "<image>" text becomes an image part at the front of its user turn."""
    messages, images_seen = [], 0
    for t, turn in enumerate(turns):
        role = _role(turn["from"], "user", f"{where}[{t}]")
        text, n_tokens = strip_image_token(turn["value"])
        if n_tokens and role != "user":
            raise PaperRecordError(f"{where}[{t}]: '<image>' appears in a {role} turn")
        if n_tokens > 1:
            raise PaperRecordError(f"{where}[{t}]: '<image>' appears {n_tokens} times; one image per record is "
                                   f"supported")
        images_seen += n_tokens
        if role == "user":
            messages.append(user_turn(text, n_tokens))
        elif role == "assistant":
            messages.append(assistant_turn(text))
        else:
            messages.append({"role": "system", "content": [{"type": "text", "text": text}]})
    if images_seen > 1:
        raise PaperRecordError(f"{where}: '<image>' appears in {images_seen} turns; one image per record is supported")
    if has_image and images_seen == 0:
        # LLaVA's loader moves the image to the front of the first human turn; do the same.
        for message in messages:
            if message["role"] == "user":
                message["content"].insert(0, {"type": "image"})
                break
    if not has_image and images_seen:
        raise PaperRecordError(f"{where}: the text has '<image>' but the record has no 'image' field")
    return messages


def _score(record: Mapping, field: str, where: str) -> int | None:
    if field not in record or record[field] is None:
        return None
    value = record[field]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise PaperRecordError(f"{where}, field {field!r}: not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or int(value) != value:
        raise PaperRecordError(f"{where}, field {field!r}: expected an integer score, got {value!r}")
    return int(value)


def _paper_scores(record: Mapping, suffix: str, prefix: str, where: str) -> dict[str, int | None]:
    scores: dict[str, int | None] = {}
    for attribute in HELPSTEER_ATTRIBUTES:
        field = attribute.capitalize() + suffix
        value = _score(record, field, where)
        if value is not None and not 0 <= value <= 4:
            raise PaperRecordError(f"{where}, field {field!r}: score {value} is outside 0-4")
        scores[prefix + attribute] = value
    parts = [scores[prefix + a] for a in ("helpfulness", "correctness", "coherence")]
    computed = sum(parts) if all(p is not None for p in parts) else None
    stated = _score(record, PAPER_SUM_FIELD + suffix, where)
    if stated is not None and computed is not None and stated != computed:
        raise PaperRecordError(f"{where}, field {PAPER_SUM_FIELD + suffix!r}: states {stated} but "
                               f"helpfulness+correctness+coherence = {computed}")
    scores[prefix + "quality"] = stated if stated is not None else computed
    return scores


def _float_or_none(record: Mapping, field: str, where: str) -> float | None:
    if field not in record or record[field] is None:
        return None
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PaperRecordError(f"{where}, field {field!r}: expected a number, got {type(value).__name__}")
    return float(value)


def infer_paper_source(image_path: str) -> str:
    """The prompt source of a paper record, read from its image path: SciGraphQA images sit under `scigraph/`."""
    return "scigraphqa" if "scigraph" in image_path.lower() else "lrv"


def _load_json_list(path: Path) -> list:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PaperRecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(records, list):
        raise PaperRecordError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    return records


def _check_images_exist(image_paths: Mapping[int, Path], file: Path, image_root: Path) -> None:
    missing = [(i, p) for i, p in image_paths.items() if not p.is_file()]
    if missing:
        shown = "\n".join(f"  record {i}: {p}" for i, p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{file}: {len(missing)} of {len(image_paths)} images are missing under image root {image_root}:\n"
            f"{shown}{more}\nThe released files hold no images: put the LRV-Instruction images and SciGraphQA's "
            f"img.zip (under scigraph/) below the image root, or pass check_images=False to skip this check."
        )


def import_paper_dpo_json(path: str | Path, image_root: str | Path, check_images: bool = True) -> Dataset:
    """Load the paper's released DPO file (`dpo_inference0104.with_logpllava-v1.5-13b_2024-02-03.json`).

    Each record has `image` (relative to `image_root`), `question` (a human turn, possibly a stringified dict, with
    "<image>\\n" already in its text), `chosen` / `rejected` (a gpt turn, or a whole conversation whose last turn is
    the answer), the chosen answer's scores in `<Attribute>_gpt4v` fields and the rejected one's in
    `<Attribute>_candidate` fields, and summed reference log-probs `ref_win_logp` / `ref_rej_logp`.

    Returns the DPO columns of `build_dpo_pairs` (without answer indices) plus `ref_chosen_logps`,
    `ref_rejected_logps` (TRL's names) and `record_index`. The length-averaged and per-token log-probs are not kept.
    Raises `PaperRecordError` naming the record index and field of a malformed record, and `FileNotFoundError`
    listing missing images.
    """
    path, image_root = Path(path), Path(image_root)
    records = _load_json_list(path)
    rows, image_paths = [], {}
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, Mapping):
            raise PaperRecordError(f"{where}: expected a dict, got {type(record).__name__}")
        for field in ("chosen", "rejected"):
            if field not in record:
                raise PaperRecordError(f"{where}, field {field!r}: missing (the record has {sorted(record)})")
        has_image = bool(record.get("image"))
        if isinstance(record["chosen"], list) != isinstance(record["rejected"], list):
            raise PaperRecordError(f"{where}: 'chosen' and 'rejected' must both be conversations or both be turns")
        if isinstance(record["chosen"], list):
            conversations = {}
            for field in ("chosen", "rejected"):
                turns = [_parse_turn(t, f"{where}, field {field!r}[{j}]") for j, t in enumerate(record[field])]
                if len(turns) < 2:
                    raise PaperRecordError(f"{where}, field {field!r}: a conversation needs a question and an answer")
                conversations[field] = _turns_to_messages(turns, has_image, f"{where}, field {field!r}")
                if conversations[field][-1]["role"] != "assistant":
                    raise PaperRecordError(f"{where}, field {field!r}: the last turn must be the gpt answer")
            prompt = conversations["chosen"][:-1]
            if prompt != conversations["rejected"][:-1]:
                raise PaperRecordError(f"{where}: 'chosen' and 'rejected' conversations have different questions")
            chosen, rejected = conversations["chosen"][-1:], conversations["rejected"][-1:]
        else:
            if "question" not in record:
                raise PaperRecordError(f"{where}, field 'question': missing (the record has {sorted(record)})")
            question_turn = _parse_turn(record["question"], f"{where}, field 'question'")
            prompt = _turns_to_messages([question_turn], has_image, f"{where}, field 'question'")
            if prompt[0]["role"] != "user":
                raise PaperRecordError(f"{where}, field 'question': expected a human turn, got {prompt[0]['role']}")
            answers = {}
            for field in ("chosen", "rejected"):
                turn = _parse_turn(record[field], f"{where}, field {field!r}")
                if _role(turn["from"], "assistant", f"{where}, field {field!r}") != "assistant":
                    raise PaperRecordError(f"{where}, field {field!r}: expected a gpt turn, got {turn['from']!r}")
                if IMAGE_TOKEN in turn["value"]:
                    raise PaperRecordError(f"{where}, field {field!r}: '<image>' appears in an answer")
                answers[field] = completion(turn["value"].strip())
            chosen, rejected = answers["chosen"], answers["rejected"]
        image_rel = str(record["image"]) if has_image else ""
        if has_image:
            image_paths[i] = image_root / image_rel
        chosen_scores = _paper_scores(record, PAPER_CHOSEN_SUFFIX, "chosen_", where)
        rejected_scores = _paper_scores(record, PAPER_REJECTED_SUFFIX, "rejected_", where)
        cq, rq = chosen_scores["chosen_quality"], rejected_scores["rejected_quality"]
        rows.append({
            "prompt_id": str(record.get("id", f"paper-{i}")),
            "image_id": image_rel,
            "source": infer_paper_source(image_rel),
            "question": message_text([m for m in prompt if m["role"] == "user"][-1]),
            "images": [str(image_paths[i])] if has_image else [],
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            **chosen_scores,
            **rejected_scores,
            "margin": float(cq - rq) if cq is not None and rq is not None else None,
            "ref_chosen_logps": _float_or_none(record, "ref_win_logp", where),
            "ref_rejected_logps": _float_or_none(record, "ref_rej_logp", where),
            "record_index": i,
        })
    if check_images:
        _check_images_exist(image_paths, path, image_root)
    return rows_to_dataset(rows, PAPER_DPO_FEATURES)


# --------------------------------------------------------------------------------------------------------------
# LLaVA conversation JSON (the paper's SFT, rejection-sampling and SteerLM files), both ways.

def import_llava_conversations(path: str | Path, image_root: str | Path, check_images: bool = True) -> Dataset:
    """Load a LLaVA-format file: a list of `{"id"?, "image"?, "conversations": [{"from", "value"}, ...]}`.

    `from` human/gpt becomes role user/assistant; the "<image>\\n" text becomes an image part at the front of its
    user turn (a record with an image but no "<image>" gets the part at the front of its first user turn, as
    LLaVA's loader does). Everything else in the text, e.g. a SteerLM attribute string, is kept as it is.
    Columns: prompt_id (the record's `id`, else `<file stem>-<index>`), image_id (the relative image path),
    images, messages, record_index.
    """
    path, image_root = Path(path), Path(image_root)
    records = _load_json_list(path)
    rows, image_paths = [], {}
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, Mapping):
            raise PaperRecordError(f"{where}: expected a dict, got {type(record).__name__}")
        turns_raw = record.get("conversations")
        if not isinstance(turns_raw, list) or not turns_raw:
            raise PaperRecordError(f"{where}, field 'conversations': expected a non-empty list of turns")
        turns = []
        for j, turn in enumerate(turns_raw):
            if not isinstance(turn, Mapping) or "from" not in turn or not isinstance(turn.get("value"), str):
                raise PaperRecordError(f"{where}, field 'conversations'[{j}]: expected {{'from', 'value': str}}")
            turns.append({"from": turn["from"], "value": turn["value"]})
        has_image = bool(record.get("image"))
        messages = _turns_to_messages(turns, has_image, f"{where}, field 'conversations'")
        roles = [m["role"] for m in messages]
        if "user" not in roles or "assistant" not in roles:
            raise PaperRecordError(f"{where}, field 'conversations': needs a human and a gpt turn (has {roles})")
        image_rel = str(record["image"]) if has_image else ""
        if has_image:
            image_paths[i] = image_root / image_rel
        rows.append({
            "prompt_id": str(record.get("id", f"{path.stem}-{i}")),
            "image_id": image_rel,
            "images": [str(image_paths[i])] if has_image else [],
            "messages": messages,
            "record_index": i,
        })
    if check_images:
        _check_images_exist(image_paths, path, image_root)
    return rows_to_dataset(rows, LLAVA_SFT_FEATURES)


def _image_file_name(image: Any) -> tuple[str, bytes]:
    """A content-addressed PNG name and the PNG bytes, so that an image shared by several rows is written once."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    pixels = hashlib.sha256(repr((image.mode, image.size)).encode() + image.tobytes()).hexdigest()[:20]
    return f"{pixels}.png", data


def _messages_to_turns(messages: Sequence[Mapping[str, Any]], where: str) -> list[dict]:
    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    turns = []
    for message in messages:
        if message["role"] not in speaker:
            raise ValueError(f"{where}: role {message['role']!r} has no LLaVA speaker name")
        text = message_text(message)
        if count_image_parts(message):
            text = f"{IMAGE_TOKEN}\n{text}"
        turns.append({"from": speaker[message["role"]], "value": text})
    return turns


def export_llava_conversations(ds: Dataset, path: str | Path, image_dir: str | Path) -> Path:
    """Write an SFT-style dataset (`messages` + `images`, or `prompt` + `completion` + `images`) as LLaVA JSON.

    Images are written once each as PNG files named by a hash of their pixels under `image_dir`; each record's
    `image` is that file name relative to `image_dir`, so `import_llava_conversations(path, image_dir)` reads the
    file back. The image part becomes "<image>\\n" at the start of its turn's text. `id` is the row's prompt_id
    where the dataset has one. Returns the JSON path.
    """
    path, image_dir = Path(path), Path(image_dir)
    has_messages = "messages" in ds.column_names
    if not has_messages and not {"prompt", "completion"} <= set(ds.column_names):
        raise ValueError(f"export needs a 'messages' column or 'prompt' + 'completion' columns (has {ds.column_names})")
    image_dir.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    records, written = [], set()
    for i, row in enumerate(ds):
        where = f"row {i}"
        messages = row["messages"] if has_messages else list(row["prompt"]) + list(row["completion"])
        images = row.get("images") or []
        if len(images) > 1:
            raise ValueError(f"{where}: {len(images)} images; LLaVA JSON holds one image per record")
        n_parts = sum(count_image_parts(m) for m in messages)
        if n_parts != len(images):
            raise ValueError(f"{where}: {n_parts} image parts in the messages but {len(images)} images")
        record: dict[str, Any] = {}
        if "prompt_id" in row and row["prompt_id"] is not None:
            record["id"] = row["prompt_id"]
        if images:
            name, data = _image_file_name(images[0])
            if name not in written and not (image_dir / name).exists():
                (image_dir / name).write_bytes(data)
            written.add(name)
            record["image"] = name
        record["conversations"] = _messages_to_turns(messages, where)
        records.append(record)
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


__all__ = [
    "HELPSTEER_ATTRIBUTES", "IMAGE_TOKEN", "MESSAGES_FEATURE", "IMAGES_FEATURE", "DPO_FEATURES", "PAPER_DPO_FEATURES",
    "LLAVA_SFT_FEATURES", "PaperRecordError", "assistant_turn", "completion", "count_image_parts",
    "export_llava_conversations", "import_llava_conversations", "import_paper_dpo_json", "infer_paper_source",
    "message_text", "messages_to_prompt_completion", "rows_to_dataset", "score_features",
    "sft_messages", "strip_image_token", "trl_preference_view", "user_turn", "vision_prompt",
]
