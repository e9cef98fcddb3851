"""MMBench CircularEval / VanillaEval against the hand-computed fixture of benchmarks.md §13, with a scripted
judge as the LLM extractor, plus the extraction rules one by one."""
import base64
import csv
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from mmalign_utils.bench import mmbench
from mmalign_utils.judges.base import ScriptedJudge

# Synthetic stand-ins for the extractor prompts (the official texts are not shipped): 3 slots each.
TEMPLATE_E = "Synthetic extractor, none = E.\nQuestion: {}?\nOptions: {}\nAnswer: {}\nYour output: "
TEMPLATE_Z = "Synthetic extractor, none = Z.\nQuestion: {}?\nOptions: {}\nAnswer: {}\nYour output: "
COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image", "source",
           "split", "comment"]


def png_b64(color=(255, 0, 0)):
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def row(index, question, options, answer, category, l2, hint=""):
    options = list(options) + [""] * (4 - len(options))  # C and D may be empty
    return [index, question, hint, *options, answer, category, l2, png_b64(), "synthetic", "dev", ""]


# Q1: 4 options, right in every rotation (as "B", "(C)", "The answer is D." and the option text).
# Q2: 2 options, right in rotation 0, wrong in rotation 1. Q3: 3 options with a hint; rotation 0 needs the judge.
ROWS = [
    row(1, "What is on the plate?", ["cat", "red apple", "dog", "banana"], "B", "image_scene", "CP"),
    row(1000001, "What is on the plate?", ["banana", "cat", "red apple", "dog"], "C", "image_scene", "CP"),
    row(2000001, "What is on the plate?", ["dog", "banana", "cat", "red apple"], "D", "image_scene", "CP"),
    row(3000001, "What is on the plate?", ["red apple", "dog", "banana", "cat"], "A", "image_scene", "CP"),
    row(2, "How does the person feel?", ["happy", "sad"], "A", "image_emotion", "CP"),
    row(1000002, "How does the person feel?", ["sad", "happy"], "B", "image_emotion", "CP"),
    row(3, "How many objects are red?", ["one", "two", "three"], "C", "attribute_comparison", "FP-C",
        hint="Look at the left object."),
    row(1000003, "How many objects are red?", ["three", "one", "two"], "A", "attribute_comparison", "FP-C",
        hint="Look at the left object."),
    row(2000003, "How many objects are red?", ["two", "three", "one"], "B", "attribute_comparison", "FP-C",
        hint="Look at the left object."),
]
PREDICTIONS = {
    "1": "B", "1000001": "(C)", "2000001": "The answer is D.", "3000001": "It is a red apple",
    "2": "A", "1000002": "A",
    "3": "a or b maybe", "1000003": "A", "2000003": "B.",
}


def write_tsv(root, rows=ROWS, name=mmbench.DEFAULT_FILE):
    (root / "mmbench").mkdir(parents=True, exist_ok=True)
    with open(root / "mmbench" / name, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return root


@pytest.fixture
def items(tmp_path):
    return mmbench.load(write_tsv(tmp_path), verify_hash=False)


def test_circular_and_vanilla_with_scripted_judge(items):
    judge = ScriptedJudge(["C"])  # exactly one call: Q3 rotation 0
    result = mmbench.score(items, PREDICTIONS, protocol="opencompass", judge=judge, judge_template=TEMPLATE_E)
    # CircularEval: Q1 right everywhere, Q2 fails in rotation 1, Q3 right (judge C) -> 2/3
    assert result["circular_acc"] == pytest.approx(2 / 3)
    # VanillaEval (rotation 0): B, A, C(judge) all right -> 3/3
    assert result["vanilla_acc"] == pytest.approx(1.0)
    # per L2: CP = (1 + 0) / 2, FP-C = 1; per category: scene 1, emotion 0, comparison 1
    assert result["circular"]["l2_category"] == {"CP": 0.5, "FP-C": 1.0}
    assert result["circular"]["category"] == {"attribute_comparison": 1.0, "image_emotion": 0.0, "image_scene": 1.0}
    assert result["vanilla"]["l2_category"] == {"CP": 1.0, "FP-C": 1.0}
    assert result["n"] == 9 and result["n_groups"] == 3 and result["headline_metric"] == "circular_acc"
    assert result["judge_calls"] == 1 and result["unparsed"] == 1 and result["random_fallbacks"] == 0
    assert result["judge"] == "scripted:test" and result["seed"] == 2680
    judged = next(r for r in result["per_item"] if r["id"] == 3)
    assert judged["pred"] == "C" and judged["source"] == "judge" and judged["judge_replies"] == ["C"]
    # the template's slots get the question, upstream's option list and the reply
    assert judge.requests[0].messages[-1]["content"] == (
        "Synthetic extractor, none = E.\nQuestion: How many objects are red??\nOptions: There are several "
        "options: \nA. one\nB. two\nC. three\n\nAnswer: a or b maybe\nYour output: ")
    assert result["judge_template_sha256"] is not None


def test_a_rule_failure_ends_the_group_before_the_judge(items):
    # Q3: rotation 1 unreadable, rotation 2 read by rule as C (truth B). The group fails without asking the
    # judge about rotation 1; the only call is VanillaEval's for rotation 0 (a second call would exhaust the
    # scripted judge and raise).
    predictions = dict(PREDICTIONS, **{"1000003": "no idea", "2000003": "C"})
    judge = ScriptedJudge(["C"])
    result = mmbench.score(items, predictions, judge=judge, judge_template=TEMPLATE_E)
    assert result["circular_acc"] == pytest.approx(1 / 3) and result["vanilla_acc"] == pytest.approx(1.0)
    assert result["judge_calls"] == 1
    assert next(r for r in result["per_item"] if r["id"] == 1000003)["source"] == "skipped"


def test_vlmevalkit_and_exact_matching(items):
    judge = ScriptedJudge(["C"])
    result = mmbench.score(items, PREDICTIONS, protocol="vlmevalkit", judge=judge, judge_template=TEMPLATE_Z)
    assert result["circular_acc"] == pytest.approx(2 / 3) and result["vanilla_acc"] == pytest.approx(1.0)
    assert judge.requests[0].messages[-1]["content"].startswith("Synthetic extractor, none = Z.")
    # no judge: Q3 rotation 0 becomes Z (wrong), so Q3 fails in both evaluations
    exact = mmbench.score(items, PREDICTIONS, protocol="exact_matching")
    assert exact["circular_acc"] == pytest.approx(1 / 3) and exact["vanilla_acc"] == pytest.approx(2 / 3)
    assert exact["judge_calls"] == 0 and exact["judge"] is None
    assert next(r for r in exact["per_item"] if r["id"] == 3)["pred"] == "Z"


def test_letter_rules_opencompass():
    # unique bare letter; "A" among more than 3 tokens may be the article; punctuated forms; E counts as a letter
    assert mmbench.infer_letter_opencompass("B") == "B"
    assert mmbench.infer_letter_opencompass("A") == "A"
    assert mmbench.infer_letter_opencompass("A cat") == "A"
    assert mmbench.infer_letter_opencompass("A dog is sitting there") is None
    assert mmbench.infer_letter_opencompass("A. A dog is sitting there") == "A"
    assert mmbench.infer_letter_opencompass("B or C") is None
    assert mmbench.infer_letter_opencompass("C.") == "C"
    assert mmbench.infer_letter_opencompass("(B).") == "B"
    assert mmbench.infer_letter_opencompass("Answer:D") is None and mmbench.infer_letter_opencompass(":D") == "D"
    assert mmbench.infer_letter_opencompass("E") == "E"
    assert mmbench.infer_letter_opencompass("Failed to obtain answer via API") is None
    options = {"A": "cat", "B": "dog"}
    item = {"options": options}
    assert mmbench.infer_by_rules("A dog is sitting there", item, "opencompass") == "B"  # via option text
    assert mmbench.infer_by_rules("a cat or a dog", item, "opencompass") is None  # two option texts


def test_letter_rules_vlmevalkit():
    assert mmbench.infer_letter_vlmevalkit("The answer is (B).", "ABCD") == "B"
    # the letter must be among the last 5 tokens
    assert mmbench.infer_letter_vlmevalkit("B is what I would pick if I had to choose", "ABCD") is None
    assert mmbench.infer_letter_vlmevalkit("Z", "ABC") == "Z"
    assert mmbench.infer_letter_vlmevalkit("Cannot determine the answer", "ABC") == "Z"
    assert mmbench.infer_letter_vlmevalkit("I think the correct answer is **C** because of the red colour here",
                                           "ABCD") == "C"
    # option text only when the reply is at most twice the options' length
    assert mmbench.infer_text("dog", {"A": "cat", "B": "dog"}, length_guard=True) == "B"
    assert mmbench.infer_text("it is clearly a dog sleeping", {"A": "cat", "B": "dog"}, length_guard=True) is None


def test_seeded_random_fallback_is_deterministic(items):
    never_sure = lambda request: "I am not sure"  # noqa: E731
    unreadable = {k: "no idea" for k in PREDICTIONS}
    runs = [mmbench.score(items, unreadable, judge=ScriptedJudge(never_sure), judge_template=TEMPLATE_E, seed=7)
            for _ in range(2)]
    picks = [[(r["pred"], r["source"]) for r in run["per_item"]] for run in runs]
    assert picks[0] == picks[1]
    drawn = [pred for pred, source in picks[0] if source == "random"]
    assert drawn and set(drawn) <= set("ABCDE")  # 4 option columns + E, as lmms-eval
    # rows of a group that already failed are not sent to the judge
    assert {source for _, source in picks[0]} <= {"random", "skipped"}
    assert runs[0]["seed"] == 7 and runs[0]["judge_calls"] == 3 * runs[0]["random_fallbacks"]


def test_prompt_and_round_trip_two_items(tmp_path, items):
    prompts = {p["question_id"]: p for p in mmbench.build_model_prompts(items)}
    assert prompts[3]["text"] == ("Look at the left object.\nHow many objects are red?\nA. one\nB. two\nC. three\n"
                                  "Answer with the option's letter from the given choices directly.")
    assert prompts[2]["prompt"] == "How does the person feel?\nA. happy\nB. sad"
    # a 2-row TSV: rotation 0 and 1 of one question, base64 images
    root = write_tsv(tmp_path / "two", [row(7, "Q?", ["x", "y"], "A", "c", "L"), row(1000007, "Q?", ["y", "x"], "B",
                                                                                     "c", "L")])
    two = mmbench.load(root, verify_hash=False)
    assert [(it["id"], it["group"], it["rotation"]) for it in two] == [(7, 7, 0), (1000007, 7, 1)]
    assert two[1]["options"] == {"A": "y", "B": "x"} and two[0]["hint"] is None
    assert mmbench.decode_image(two[0]).size == (1, 1)
    mmbench.write_answers(tmp_path / "a.jsonl", {"7": "A", "1000007": "B"})
    assert mmbench.read_answers(tmp_path / "a.jsonl") == {"7": "A", "1000007": "B"}


def test_llava_all_rounds(tmp_path):
    root = write_tsv(tmp_path, [row(5, "How many?", ["one", "two", "three"], "C", "c", "L")])
    items = mmbench.load(root, verify_hash=False, all_rounds=True)
    # LLaVA --all-rounds shifts the options left by k: round 1 = two, three, one (C -> B); round 2 -> A
    assert [(it["id"], it["answer"]) for it in items] == [(5, "C"), (1000005, "B"), (2000005, "A")]
    assert items[1]["options"] == {"A": "two", "B": "three", "C": "one"}
    with open(tmp_path / "answers.jsonl", "w") as f:
        for round_id, text in enumerate(["C", "B", "A"]):
            f.write(json.dumps({"question_id": 5, "round_id": round_id, "prompt": "", "text": text}) + "\n")
    result = mmbench.score_file(tmp_path / "answers.jsonl", tmp_path, verify_hash=False, all_rounds=True)
    assert result["circular_acc"] == 1.0 and result["n"] == 3


def test_missing_rows_and_unknown_protocol(items):
    partial = {k: v for k, v in PREDICTIONS.items() if k != "1000002"}
    with pytest.raises(ValueError, match="1000002"):
        mmbench.score(items, partial, judge=ScriptedJudge(["C"]), judge_template=TEMPLATE_E)
    dropped = mmbench.score(items, partial, judge=ScriptedJudge(["C"]), judge_template=TEMPLATE_E, only_answered=True)
    assert dropped["n_groups"] == 2 and dropped["circular_acc"] == 1.0  # Q2 dropped whole
    with pytest.raises(ValueError, match="unknown protocol"):
        mmbench.build_model_prompts(items, protocol="lmms")
    with pytest.raises(ValueError, match="judge_template"):
        mmbench.score(items, PREDICTIONS, judge=ScriptedJudge(["C"]))


def test_judge_template_is_read_from_the_script(tmp_path, items):
    # lmms-eval keeps the prompt in a method; the file is parsed with ast and never run
    (tmp_path / "mmbench").mkdir(exist_ok=True)
    script = tmp_path / "mmbench" / "mmbench_evals.py"
    script.write_text("raise SystemExit('parse me, do not run me')\n"
                      "class MMBench_Evaluator:\n"
                      "    def build_prompt(self, question, options, prediction):\n"
                      f"        tmpl = ({TEMPLATE_E[:31]!r}\n"
                      f"                {TEMPLATE_E[31:]!r})\n"
                      "        return tmpl.format(question, options, prediction)\n")
    assert mmbench.load_judge_template(script) == TEMPLATE_E
    write_tsv(tmp_path)
    mmbench.write_answers(tmp_path / "answers.jsonl", PREDICTIONS)
    result = mmbench.score_file(tmp_path / "answers.jsonl", tmp_path, verify_hash=False, judge=ScriptedJudge(["C"]))
    assert result["circular_acc"] == pytest.approx(2 / 3) and result["judge_calls"] == 1
    (tmp_path / "bad.py").write_text("def build_prompt():\n    tmpl = 'only {} one slot'\n")
    with pytest.raises(ValueError, match="3 '{}' slots"):
        mmbench.load_judge_template(tmp_path / "bad.py")


REAL_DATA = os.environ.get("MMALIGN_BENCH_DATA")


@pytest.mark.skipif(not REAL_DATA, reason="set MMALIGN_BENCH_DATA to a folder with the real benchmark files")
def test_real_dev_file_loads():
    if not (Path(REAL_DATA) / "mmbench" / mmbench.DEFAULT_FILE).exists():
        pytest.skip(f"mmbench/{mmbench.DEFAULT_FILE} not under {REAL_DATA}")
    items = mmbench.load(REAL_DATA)
    assert len({it["group"] for it in items}) == 1164  # v1.0 dev questions
    assert all(it["answer"] in it["options"] for it in items)
