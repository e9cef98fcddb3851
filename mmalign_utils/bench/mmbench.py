"""MMBench (multiple choice with circular rotations), scored with CircularEval and VanillaEval.

Data: the official TSV (`mmbench_dev_20230712.tsv` in the paper). Each rotation of a question is its own row
with `index = original + k * 1e6`, rotated options and a relabelled answer; a group is `index % 1e6`.

Answer extraction, per protocol:
- "opencompass" (paper: the OpenCompass server; mirrored by lmms-eval): (1) a bare choice letter among A-E that is
  the only one in the whitespace split, except "A" in a reply of more than 3 tokens (may be the article); then
  the punctuated forms "A." "A," "A:" "A)" "A)." "(A)" "(A)." ":A" ":A," ":A." ":A)" ":A)." in that order, each
  taken when exactly one letter matches; (2) exactly one option text as a case-insensitive substring; (3) an LLM
  extractor (the judge; E = none) re-parsed by 1-2, up to 3 tries; (4) a seeded random letter from A-D + E.
- "vlmevalkit": punctuation .()[],:;!*# {} stripped, the single letter must be among the last 5 tokens, a lone
  "Z" or a refusal phrase means no answer, "(correct) answer is X" is accepted; option text only when the reply
  is at most twice the total option length; judge with Z = none; random among the options + Z.
- "exact_matching": VLMEvalKit's rules and no judge: rows the rules cannot read count as wrong (Z).

CircularEval: a group is right only if every rotation is extracted and equals its own answer; a rotation the
rules read as wrong fails the group before any judge call. VanillaEval scores rotation 0 only. Metrics are
fractions; per category and per L2 category too.
"""
from __future__ import annotations

import ast
import base64
import hashlib
import io
import math
import random
import re
import string
from collections import defaultdict
from pathlib import Path

from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files, read_jsonl, write_jsonl
from mmalign_utils.judges.base import Judge, JudgeRequest

NAME = "mmbench"
PROTOCOLS = {
    "opencompass": "original OpenCompass extraction (letter, option text, gpt-3.5 extractor, seeded random) (paper)",
    "vlmevalkit": "VLMEvalKit extraction (stripped punctuation, letter near the end, Z = none, judge)",
    "exact_matching": "VLMEvalKit rules without a judge: unreadable replies are wrong",
}
DEFAULT_PROTOCOL = "opencompass"
DEFAULT_SEED = 2680  # lmms-eval's seed for the random fallback
ROTATION = 1_000_000
LETTERS = "ABCD"
DEFAULT_FILE = "mmbench_dev_20230712.tsv"

REQUIRED_FILES = [
    DataFile(
        relpath=f"mmbench/{DEFAULT_FILE}",
        source="https://download.openmmlab.com/mmclassification/datasets/mmbench/mmbench_dev_20230712.tsv "
               "(the file LLaVA's scripts/v1_5/eval/mmbench.sh uses); no reference SHA-256 is known, the one seen "
               "is recorded",
    )
]

LLAVA_INSTRUCTION = {"en": "Answer with the option's letter from the given choices directly.",
                     "cn": "请直接回答选项字母。"}


# --------------------------------------------------------------------------------------------------- data

def is_none(value: object) -> bool:
    """LLaVA's is_none: None, NaN, or the strings 'nan'/'none' (any case)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def _row_to_item(row: dict, option_columns: int) -> dict:
    options: dict[str, str] = {}
    for letter in LETTERS:  # LLaVA's get_options: stop at the first missing option
        if is_none(row.get(letter)):
            break
        options[letter] = str(row[letter])
    index = int(row["index"])
    answer = row.get("answer")
    return {
        "id": index, "group": index % ROTATION, "rotation": index // ROTATION,
        "question": str(row["question"]), "hint": None if is_none(row.get("hint")) else str(row["hint"]),
        "options": options, "option_columns": option_columns,
        "answer": None if is_none(answer) else str(answer).strip(),
        "category": row.get("category"), "l2_category": row.get("l2-category", row.get("l2_category")),
        "image": row.get("image"), "source": row.get("source"), "split": row.get("split"),
    }


def load_tsv(path: str | Path) -> list[dict]:
    """Items from an MMBench TSV, read with pandas like LLaVA and OpenCompass (same NA handling)."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", dtype=str)
    needed = {"index", "question", "A", "B"} - set(frame.columns)
    if needed:
        raise ValueError(f"{path}: columns {sorted(needed)} missing; is this an MMBench TSV? (columns: "
                         f"{list(frame.columns)})")
    option_columns = sum(letter in frame.columns for letter in LETTERS)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [_row_to_item(row, option_columns) for row in records]


def load(data_dir: str | Path, verify_hash: bool = True, filename: str = DEFAULT_FILE,
         all_rounds: bool = False) -> list[dict]:
    """Items {id, group, rotation, question, hint, options, answer, category, l2_category, image (base64), ...}.

    `all_rounds=True` adds LLaVA's `--all-rounds` rotations for TSVs that carry only rotation 0.
    """
    return load_with_versions(data_dir, verify_hash, filename, all_rounds)[0]


def load_with_versions(data_dir: str | Path, verify_hash: bool = True, filename: str = DEFAULT_FILE,
                       all_rounds: bool = False) -> tuple[list[dict], dict[str, str]]:
    files = [DataFile(relpath=f"mmbench/{filename}", source=REQUIRED_FILES[0].source)]
    seen = check_files(NAME, data_dir, files, verify_hash=verify_hash)
    items = load_tsv(Path(data_dir) / files[0].relpath)
    return (expand_rotations(items) if all_rounds else items), seen


def expand_rotations(items: list[dict]) -> list[dict]:
    """Add the rotations LLaVA's model_vqa_mmbench --all-rounds asks (options shifted left by k) to groups that
    have only rotation 0, as rows with index + k * 1e6."""
    rotated_groups = {it["group"] for it in items if it["rotation"] > 0}
    out = list(items)
    for it in items:
        if it["rotation"] != 0 or it["group"] in rotated_groups or len(it["options"]) < 2:
            continue
        texts = list(it["options"].values())
        n = len(texts)
        for k in range(1, n):
            new = dict(it)
            new["id"], new["rotation"] = it["id"] + k * ROTATION, k
            new["options"] = dict(zip(LETTERS, texts[k:] + texts[:k]))
            if it["answer"] in LETTERS[:n]:
                new["answer"] = LETTERS[(LETTERS.index(it["answer"]) - k) % n]
            out.append(new)
    return sorted(out, key=lambda x: x["id"])


def decode_image(item: dict):
    """The item's base64 image as a PIL image."""
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(item["image"]))).convert("RGB")


def llava_question_text(item: dict) -> str:
    """LLaVA's cur_prompt: hint (when present) + newline + question, then one 'A. option' line per option."""
    text = item["question"] if item["hint"] is None else item["hint"] + "\n" + item["question"]
    for letter, option in item["options"].items():
        text += "\n" + letter + ". " + option
    return text


def build_model_prompts(items: list[dict], protocol: str = DEFAULT_PROTOCOL, lang: str = "en") -> list[dict]:
    """Question records {question_id, prompt, text, image (base64), options, option_char}.

    `text` is what the model reads after the image token. opencompass/exact_matching: LLaVA's
    --single-pred-prompt format; vlmevalkit: VLMEvalKit's Hint/Question/Options layout (unverified wording).
    """
    _check_protocol(protocol)
    records = []
    for it in items:
        prompt = llava_question_text(it)
        if protocol == "vlmevalkit":
            text = (f"Hint: {it['hint']}\n" if it["hint"] is not None else "") + f"Question: {it['question']}\n"
            text += "Options:\n" + "".join(f"{k}. {v}\n" for k, v in it["options"].items())
            text += "Please select the correct answer from the options above. \n"
        else:
            text = prompt + "\n" + LLAVA_INSTRUCTION[lang]
        records.append({"question_id": it["id"], "round_id": 0, "prompt": prompt, "text": text,
                        "image": it["image"], "options": list(it["options"].values()),
                        "option_char": list(it["options"])})
    return records


def read_answers(path: str | Path) -> dict[str, str]:
    """LLaVA answer JSONL -> {index as str: text}; a `round_id` k > 0 (--all-rounds) maps to index + k * 1e6."""
    answers: dict[str, str] = {}
    for lineno, row in enumerate(read_jsonl(path), 1):
        if "question_id" not in row or "text" not in row:
            raise ValueError(f"{path}:{lineno}: an answer needs 'question_id' and 'text'; got keys {sorted(row)}")
        key = str(int(row["question_id"]) + int(row.get("round_id") or 0) * ROTATION)
        if key in answers:
            raise ValueError(f"{path}:{lineno}: row {key} answered twice; keep one answer per row")
        answers[key] = row["text"]
    return answers


def write_answers(path: str | Path, answers: dict[str, str], model_id: str = "") -> None:
    write_jsonl(path, ({"question_id": int(qid), "round_id": 0, "prompt": "", "text": text, "answer_id": "",
                        "model_id": model_id, "metadata": {}} for qid, text in answers.items()))


# --------------------------------------------------------------------------------------------------- extraction

_PUNCTUATED = [("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
               (":", ","), (":", "."), (":", ")"), (":", ").")]


def _count(tokens: list[str], letters: str, prefix: str = "", suffix: str = "") -> int:
    return sum(prefix + c + suffix in tokens for c in letters)


def infer_letter_opencompass(answer: str, letters: str = "ABCDE") -> str | None:
    """OpenCompass rule 1 (lmms-eval `can_infer_option`): a unique bare letter, else a unique punctuated one."""
    if "Failed to obtain answer via API" in answer:
        return None
    tokens = [x.strip() for x in answer.split()]
    if _count(tokens, letters) == 1:
        present = next(c for c in letters if c in tokens)
        if not (present == "A" and "A" in tokens and len(tokens) > 3):  # "A" may be the article
            return present
    for prefix, suffix in _PUNCTUATED:
        if _count(tokens, letters, prefix, suffix) == 1:
            return next(c for c in letters if prefix + c + suffix in tokens)
    return None


def infer_text(answer: str, options: dict[str, str], length_guard: bool = False) -> str | None:
    """Rule 2: exactly one option text occurs (case-insensitively) in the reply."""
    answer = answer.lower()
    if length_guard and len(answer) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    hits = [k for k, v in options.items() if str(v).lower() in answer]
    return hits[0] if len(hits) == 1 else None


_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")
_VERBOSE_ANSWER = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def infer_letter_vlmevalkit(answer: str, letters: str) -> str | None:
    """VLMEvalKit `can_infer_option`; returns a letter, 'Z' (no answer) or None."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(phrase in answer for phrase in _REFUSALS):
        return "Z"
    stripped = answer
    for char in ".()[],:;!*#{}":
        stripped = stripped.replace(char, " ")
    tokens = [x.strip() for x in stripped.split()]
    count = _count(tokens, letters)
    if count == 1:
        letter = next(c for c in letters if c in tokens)
        if tokens.index(letter) > len(tokens) - 5:
            return letter
    elif count == 0 and "Z" in tokens:
        return "Z"
    match = _VERBOSE_ANSWER.search(answer)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def infer_by_rules(answer: str, item: dict, protocol: str) -> str | None:
    """Rules 1-2 for one reply; None when they cannot decide."""
    if protocol == "opencompass":
        return infer_letter_opencompass(answer) or infer_text(answer, item["options"])
    letters = "".join(item["options"])
    return infer_letter_vlmevalkit(answer, letters) or infer_text(answer, item["options"], length_guard=True)


JUDGE_TEMPLATE_SOURCES = {
    "opencompass": ("mmbench/mmbench_evals.py", "lmms-eval lmms_eval/tasks/mmbench/mmbench_evals.py "
                    "(MMBench_Evaluator.build_prompt, the OpenCompass extractor prompt; 'output E')"),
    "vlmevalkit": ("mmbench/multiple_choice.py", "VLMEvalKit vlmeval/dataset/utils/multiple_choice.py "
                   "(build_prompt; 'output Z')"),
}


def template_from_function(script_path: str | Path, function: str, variable: str = "tmpl") -> str:
    """The string literal assigned to `variable` inside the function (or method) `function` of a Python file,
    read with `ast`: the official prompt texts are not shipped here, and parsing runs none of the script."""
    path = Path(script_path)
    if not path.exists():
        raise BenchmarkDataError(f"missing {path}: the judge prompt is read from the official script; put a copy "
                                 "there (see docs/benchmarks_rules.md)")
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            for inner in ast.walk(node):
                if (isinstance(inner, ast.Assign) and isinstance(inner.value, ast.Constant)
                        and isinstance(inner.value.value, str)
                        and any(isinstance(t, ast.Name) and t.id == variable for t in inner.targets)):
                    return inner.value.value
    raise BenchmarkDataError(f"{path}: no string `{variable} = ...` inside a function `{function}`; is this the "
                             "official script?")


def load_judge_template(script_path: str | Path, protocol: str = DEFAULT_PROTOCOL) -> str:
    """The extractor prompt template (3 '{}' slots: question, options, prediction) from the official script."""
    _check_protocol(protocol)
    return _checked_template(template_from_function(script_path, "build_prompt"), str(script_path))


def _checked_template(template: str, where: str) -> str:
    if template.count("{}") != 3:
        raise ValueError(f"{where}: the MMBench extractor template needs 3 '{{}}' slots (question, options, "
                         f"prediction); it has {template.count('{}')}")
    return template


def judge_prompt(item: dict, prediction: str, template: str) -> str:
    """The LLM extractor prompt: upstream's template filled with the question, the option list as upstream
    formats it ("There are several options: \n" and one "A. text" line per option) and the reply."""
    options = "There are several options: \n" + "".join(f"{k}. {v}\n" for k, v in item["options"].items())
    return template.format(item["question"], options, prediction)


class _Extractor:
    """Runs rule 3 (judge) and rule 4 (random) for the rows rules 1-2 could not read, with a seeded RNG."""

    def __init__(self, protocol: str, judge: Judge | None, template: str | None, seed: int, tries: int = 3):
        self.protocol, self.judge, self.template, self.tries = protocol, judge, template, tries
        self.rng = random.Random(seed)
        self.judge_calls = self.judge_unparsed = self.random_fallbacks = self.no_judge = 0

    def extract(self, item: dict, text: str) -> tuple[str | None, str, list[str]]:
        """-> (letter or None, source, judge replies)."""
        if self.protocol == "exact_matching" or self.judge is None:
            self.no_judge += 1
            return ("Z" if self.protocol != "opencompass" else None), "none", []
        replies = []
        for attempt in range(self.tries):
            request = JudgeRequest.from_prompt(judge_prompt(item, text, self.template), temperature=0.0,
                                               max_tokens=256, repeat=attempt, tag=f"mmbench:{item['id']}")
            reply = self.judge.complete(request).text
            self.judge_calls += 1
            replies.append(reply)
            letter = infer_by_rules(reply, item, self.protocol)
            if letter:
                return letter, "judge", replies
            self.judge_unparsed += 1
        self.random_fallbacks += 1
        if self.protocol == "opencompass":
            # lmms-eval counts option *columns* present (always 4 in the TSV), then adds E.
            n = item["option_columns"]
            if n < 2:
                return None, "random", replies
            return (string.ascii_uppercase[:n] + "E")[self.rng.randint(0, n)], "random", replies
        return self.rng.choice(list(item["options"]) + ["Z"]), "random", replies


# --------------------------------------------------------------------------------------------------- scoring

def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"MMBench: unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}")


def _breakdown(hits: list[dict]) -> dict:
    """hits: {hit, category, l2_category} -> overall and per (L2) category accuracy."""
    def mean_by(key: str) -> dict:
        groups: dict[str, list[int]] = defaultdict(list)
        for h in hits:
            groups[str(h[key]) if h[key] is not None else "uncategorized"].append(h["hit"])
        return {k: sum(v) / len(v) for k, v in sorted(groups.items())}

    return {"overall": sum(h["hit"] for h in hits) / len(hits), "n": len(hits),
            "l2_category": mean_by("l2_category"), "category": mean_by("category")}


def score(items: list[dict], answers: dict[str, str], *, protocol: str = DEFAULT_PROTOCOL, judge: Judge | None = None,
          judge_template: str | None = None, seed: int = DEFAULT_SEED, allow_missing: bool = False,
          only_answered: bool = False, **_: object) -> dict:
    """CircularEval and VanillaEval of answers {row index as str: reply}.

    With a judge, `judge_template` is the extractor prompt (see load_judge_template). Without a judge, rows the
    rules cannot read are wrong (opencompass: no letter; vlmevalkit/exact_matching: Z). Missing rows raise
    unless `allow_missing` (scored as empty replies) or `only_answered` (groups with any unanswered row are
    dropped).
    """
    _check_protocol(protocol)
    if judge is not None and protocol != "exact_matching":
        if judge_template is None:
            path, source = JUDGE_TEMPLATE_SOURCES[protocol]
            raise ValueError(f"MMBench: a judge needs judge_template=, the extractor prompt; load it with "
                             f"load_judge_template('<data_dir>/{path}') from {source}")
        _checked_template(judge_template, "judge_template")
    answers = {str(k): v for k, v in answers.items()}
    by_group: dict[int, list[dict]] = defaultdict(list)
    for it in sorted(items, key=lambda x: x["id"]):
        by_group[it["group"]].append(it)
    if only_answered:
        by_group = {g: rows for g, rows in by_group.items() if all(str(r["id"]) in answers for r in rows)}
    rows = [r for g in sorted(by_group) for r in by_group[g]]
    no_truth = [r["id"] for r in rows if r["answer"] is None]
    if no_truth:
        raise ValueError(f"MMBench: {len(no_truth)} rows have no ground-truth answer (first: {no_truth[:5]}); the "
                         "test split is scored by the OpenCompass server, not locally")
    missing = [r["id"] for r in rows if str(r["id"]) not in answers]
    if missing and not allow_missing:
        raise ValueError(f"MMBench: {len(missing)} of {len(rows)} rows have no answer (first: {missing[:5]}); "
                         "answer them, or pass allow_missing=True or only_answered=True")
    if not rows:
        raise ValueError("MMBench: nothing to score (no items)")

    extractor = _Extractor(protocol, judge, judge_template, seed)
    record: dict[int, dict] = {}
    for r in rows:
        text = answers.get(str(r["id"]), "")
        letter = infer_by_rules(text, r, protocol)
        record[r["id"]] = {"id": r["id"], "group": r["group"], "rotation": r["rotation"], "answer": r["answer"],
                           "text": text, "pred": letter, "source": "rule" if letter else None}

    def resolve(r: dict) -> str | None:
        rec = record[r["id"]]
        if rec["source"] is None:
            rec["pred"], rec["source"], replies = extractor.extract(r, rec["text"])
            if replies:
                rec["judge_replies"] = replies
        return rec["pred"]

    circular, vanilla = [], []
    for group in sorted(by_group):
        members = by_group[group]
        main = next((m for m in members if m["rotation"] == 0), members[0])
        # A rotation the rules already read as wrong fails the group before any judge call.
        hit = not any(record[m["id"]]["source"] == "rule" and record[m["id"]]["pred"] != m["answer"] for m in members)
        if hit:
            for m in members:
                if record[m["id"]]["source"] is None and resolve(m) != m["answer"]:
                    hit = False
                    break
        circular.append({"group": group, "hit": int(hit), "category": main["category"],
                         "l2_category": main["l2_category"], "rotations": len(members)})
    for group in sorted(by_group):
        main = next((m for m in by_group[group] if m["rotation"] == 0), None)
        if main is not None:
            vanilla.append({"group": group, "hit": int(resolve(main) == main["answer"]),
                            "category": main["category"], "l2_category": main["l2_category"]})

    for rec in record.values():
        if rec["source"] is None:  # its group had already failed: no judge call was spent on it
            rec["source"] = "skipped"
    circular_scores = _breakdown(circular)
    return {
        "benchmark": NAME, "protocol": protocol, "n": len(rows), "n_groups": len(circular),
        "headline_metric": "circular_acc", "circular_acc": circular_scores["overall"],
        "vanilla_acc": _breakdown(vanilla)["overall"] if vanilla else math.nan,
        "circular": circular_scores, "vanilla": _breakdown(vanilla) if vanilla else {},
        "unparsed": sum(1 for rec in record.values() if rec["source"] != "rule"),
        "missing": len(missing),
        "groups_without_rotations": sum(1 for c in circular if c["rotations"] == 1),
        "judge": getattr(judge, "judge_id", None) if protocol != "exact_matching" else None,
        "judge_calls": extractor.judge_calls, "judge_unparsed": extractor.judge_unparsed,
        "random_fallbacks": extractor.random_fallbacks, "no_judge_rows": extractor.no_judge, "seed": seed,
        "judge_template_sha256": (hashlib.sha256(judge_template.encode()).hexdigest()
                                  if judge_template and extractor.judge_calls else None),
        "per_item": [record[r["id"]] for r in rows], "per_group": circular,
    }


def score_file(answers_path: str | Path, data_dir: str | Path, protocol: str = DEFAULT_PROTOCOL,
               judge: Judge | None = None, **kw) -> dict:
    """Load the TSV (`filename=`, `all_rounds=`), read a LLaVA answer file and score it. With a judge, the
    extractor prompt is read from `judge_template_path` (default <data_dir>/mmbench/mmbench_evals.py for
    opencompass, <data_dir>/mmbench/multiple_choice.py for vlmevalkit)."""
    items, seen = load_with_versions(data_dir, verify_hash=kw.pop("verify_hash", True),
                                     filename=kw.pop("filename", DEFAULT_FILE), all_rounds=kw.pop("all_rounds", False))
    template_path = kw.pop("judge_template_path", None)
    if judge is not None and protocol != "exact_matching" and "judge_template" not in kw:
        template_path = template_path or Path(data_dir) / JUDGE_TEMPLATE_SOURCES[protocol][0]
        kw["judge_template"] = load_judge_template(template_path, protocol)
    result = score(items, read_answers(answers_path), protocol=protocol, judge=judge, **kw)
    result["data_version"] = seen
    result["answers_file"] = str(answers_path)
    return result
