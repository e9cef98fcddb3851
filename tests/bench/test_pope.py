"""POPE scorer against the hand-computed fixture of benchmarks.md §13: 3 splits x (2 yes + 2 no), one case per
protocol, yes-ratio taken from the predictions. Every expected number is worked out in the comments."""
import json
import os
from pathlib import Path

import pytest

from mmalign_utils.bench import pope
from mmalign_utils.bench.common import BenchmarkDataError, check_files
from mmalign_utils.judges.base import ScriptedJudge

# A synthetic stand-in for VLMEvalKit's yorn.py (its prompt text is not shipped): same function, same 2 slots.
YORN_SCRIPT = (
    "def YOrN_match_prompt(line):\n"
    "    tmpl = ('Synthetic matcher: reply Yes, No or Unknown.\\n'\n"
    "            'Question: {}?\\nAnswer: {}\\nYour output: ')\n"
    "    return tmpl.format(line['question'], line['prediction'])\n"
)
LABELS = ["yes", "yes", "no", "no"]  # question_id 1..4 in every split
ANSWERS = {
    "random": ["Yes, there is a dog.", "No.", "There is not a cat in the image.", "NO"],
    "popular": ["Nope", "", "Yes, but no cat", "I don't think so"],
    "adversarial": ["yes", "Yes", "no", "Yes."],
}


def write_pope(root, splits=pope.SPLITS):
    (root / "pope").mkdir(parents=True)
    for s_index, split in enumerate(splits):
        with open(root / "pope" / f"coco_pope_{split}.json", "w") as f:  # JSON Lines despite the name
            for qid, label in enumerate(LABELS, 1):
                image = f"COCO_val2014_{s_index * 4 + qid:012d}.jpg"
                f.write(json.dumps({"question_id": qid, "image": image, "text": f"Is there a dog in the image? {qid}",
                                    "label": label}) + "\n")
    return root


@pytest.fixture
def items(tmp_path):
    return pope.load(write_pope(tmp_path), verify_hash=False)


def answers_for(splits=pope.SPLITS):
    return {pope.item_id(split, qid): text for split in splits for qid, text in enumerate(ANSWERS[split], 1)}


def test_llava_parse_edge_cases():
    # §5 table: the first sentence only, commas removed, single-space split; 'No'/'no'/'not' tokens mean no.
    for text in ["NO", "Nope", "n't", "I don't think so", "", "Yes"]:
        assert pope.parse_llava(text) == "yes", text
    for text in ["No.", "There is not a dog", "Yes, but no cat", "no", "No, there is none"]:
        assert pope.parse_llava(text) == "no", text
    # only the text before the first "." counts
    assert pope.parse_llava("Yes. There is no cat.") == "yes"


def test_llava_protocol_per_split(items):
    result = pope.score(items, answers_for(), protocol="llava")
    # random: parsed yes, no, no, yes vs labels yes, yes, no, no -> TP 1 (q1), FN 1 (q2), TN 1 (q3), FP 1 (q4)
    r = result["splits"]["random"]
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (1, 1, 1, 1)
    assert r["acc"] == pytest.approx(0.5) and r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5) and r["f1"] == pytest.approx(0.5)
    assert r["yes_ratio"] == pytest.approx(0.5)
    # popular: "Nope" yes, "" yes, "Yes, but no cat" no, "I don't think so" yes -> TP 2, FN 0, TN 1, FP 1
    p = result["splits"]["popular"]
    assert (p["tp"], p["fp"], p["tn"], p["fn"]) == (2, 1, 1, 0)
    assert p["acc"] == pytest.approx(0.75)
    assert p["precision"] == pytest.approx(2 / 3) and p["recall"] == pytest.approx(1.0)
    assert p["f1"] == pytest.approx(0.8)  # 2 * (2/3) * 1 / (5/3)
    # yes-ratio from the predictions (3 of 4 say yes), not from the labels (2 of 4): regression test
    assert p["yes_ratio"] == pytest.approx(0.75)
    # adversarial: yes, yes, no, "Yes." -> yes: same counts as popular
    a = result["splits"]["adversarial"]
    assert (a["tp"], a["fp"], a["tn"], a["fn"]) == (2, 1, 1, 0) and a["f1"] == pytest.approx(0.8)
    # headline: mean F1 = (0.5 + 0.8 + 0.8) / 3 = 0.7
    assert result["headline_metric"] == "f1_mean"
    assert result["f1_mean"] == pytest.approx(0.7)
    assert result["n"] == 12 and result["unparsed"] == 0 and result["protocol"] == "llava"
    assert result["pooled"]["tp"] == 5 and result["pooled"]["fp"] == 3  # 1+2+2 and 1+1+1


def test_lmms_eval_protocol(items):
    result = pope.score(items, answers_for(), protocol="lmms_eval")
    # random: only "NO" -> "no" is exact; q4 label no -> TN 1; nothing else counts; acc 1/4
    r = result["splits"]["random"]
    assert (r["tp"], r["fp"], r["tn"], r["fn"], r["unparsed"]) == (0, 0, 1, 0, 3)
    assert r["acc"] == pytest.approx(0.25) and r["f1"] == 0.0  # guarded 0/0
    # popular: nothing is exactly yes/no -> all zero; the predictions' yes-ratio is 0, lmms-eval's label one 0.5
    p = result["splits"]["popular"]
    assert p["unparsed"] == 4 and p["acc"] == 0.0 and p["f1"] == 0.0
    assert p["yes_ratio"] == 0.0 and p["label_yes_ratio"] == pytest.approx(0.5)
    # adversarial: yes, yes, no exact, "yes." unparsed -> TP 2, TN 1; P = R = F1 = 1; acc 3/4
    a = result["splits"]["adversarial"]
    assert (a["tp"], a["fp"], a["tn"], a["fn"]) == (2, 0, 1, 0)
    assert a["f1"] == pytest.approx(1.0) and a["acc"] == pytest.approx(0.75) and a["yes_ratio"] == pytest.approx(0.5)
    assert result["f1_mean"] == pytest.approx(1 / 3)  # (0 + 0 + 1) / 3
    assert result["unparsed"] == 8


def test_vlmevalkit_protocol_without_judge(items):
    result = pope.score(items, answers_for(), protocol="vlmevalkit")
    # random: yes, no, Unknown ("not" is not "no"), no -> TP 1, FN 1 (q2); Unknown q3 (label no) is a 0 prediction
    r = result["splits"]["random"]
    assert (r["tp"], r["fp"], r["fn"], r["unparsed"]) == (1, 0, 1, 1)
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(2 / 3) and r["acc"] == pytest.approx(0.5) and r["yes_ratio"] == pytest.approx(0.25)
    # popular: all Unknown ("yes, but no cat" has both words) -> labels yes count as FN: P 0, R 0, F1 0
    p = result["splits"]["popular"]
    assert p["unparsed"] == 4 and p["fn"] == 2 and p["f1"] == 0.0 and p["acc"] == 0.0
    # adversarial: "Yes." -> yes after punctuation handling -> like LLaVA: F1 0.8
    assert result["splits"]["adversarial"]["f1"] == pytest.approx(0.8)
    assert result["f1_mean"] == pytest.approx((2 / 3 + 0 + 0.8) / 3)  # 22/45
    assert result["judge"] is None and result["judge_calls"] == 0


def test_vlmevalkit_protocol_with_scripted_judge(items, tmp_path):
    verdicts = {"There is not a cat in the image.": "No", "Nope": "No", "": "I cannot tell",
                "Yes, but no cat": "Yes", "I don't think so": "No"}

    def reply(request):
        prediction = request.messages[-1]["content"].rsplit("\nAnswer: ", 1)[1].split("\nYour output: ")[0]
        return verdicts[prediction]

    (tmp_path / "yorn.py").write_text(YORN_SCRIPT)
    template = pope.load_judge_template(tmp_path / "yorn.py")  # read with ast, never run
    assert template == "Synthetic matcher: reply Yes, No or Unknown.\nQuestion: {}?\nAnswer: {}\nYour output: "
    judge = ScriptedJudge(reply)
    with pytest.raises(ValueError, match="judge_template"):
        pope.score(items, answers_for(), protocol="vlmevalkit", judge=judge)
    result = pope.score(items, answers_for(), protocol="vlmevalkit", judge=judge, judge_template=template)
    # 4 Unknowns answered at once, "" stays Unknown after 5 tries: 4 + 5 = 9 calls
    assert result["judge_calls"] == 9 and len(judge.requests) == 9
    empty_tries = [r.temperature for r in judge.requests if "\nAnswer: \nYour output" in r.messages[-1]["content"]]
    assert empty_tries == [0.0, 0.5, 1.0, 1.5, 2.0]
    # the template is filled with the question and the reply (upstream's "Question: {}?" doubles the "?")
    assert judge.requests[0].messages[-1]["content"] == template.format("Is there a dog in the image? 3",
                                                                        "There is not a cat in the image.")
    # random: yes, no, no, no vs yes, yes, no, no -> TP 1, FN 1, TN 2: P 1, R 0.5, F1 2/3, acc 3/4
    r = result["splits"]["random"]
    assert (r["tp"], r["fn"], r["tn"]) == (1, 1, 2) and r["acc"] == pytest.approx(0.75)
    # popular: no, Unknown, yes, no vs yes, yes, no, no -> TP 0, FP 1, FN 2 -> P 0, R 0, F1 0, acc 1/4
    p = result["splits"]["popular"]
    assert (p["tp"], p["fp"], p["fn"], p["unparsed"]) == (0, 1, 2, 1) and p["acc"] == pytest.approx(0.25)
    assert result["judge"] == "scripted:test"


def test_missing_answers_raise_or_count(items):
    answers = answers_for()
    del answers["random-2"]
    with pytest.raises(ValueError, match="random-2"):
        pope.score(items, answers)
    # allow_missing scores the gap as an empty reply: LLaVA reads "" as yes -> random q2 becomes a TP
    result = pope.score(items, answers, allow_missing=True)
    assert result["missing"] == 1 and result["splits"]["random"]["tp"] == 2
    dropped = pope.score(items, answers, only_answered=True)
    assert dropped["n"] == 11 and dropped["splits"]["random"]["n"] == 3


def test_llava_zero_division_is_nan_not_a_crash(tmp_path):
    items = pope.load(write_pope(tmp_path), verify_hash=False)
    all_no = {it["id"]: "No" for it in items}
    result = pope.score(items, all_no, protocol="llava")
    assert result["splits"]["random"]["precision"] != result["splits"]["random"]["precision"]  # NaN
    assert pope.score(items, all_no, protocol="lmms_eval")["splits"]["random"]["precision"] == 0.0


def test_round_trip_two_items(tmp_path):
    write_pope(tmp_path)
    items = pope.load(tmp_path, verify_hash=False, image_dir=tmp_path / "imgs")[:2]
    assert [it["id"] for it in items] == ["random-1", "random-2"]
    assert items[0]["image_path"] == str(tmp_path / "imgs" / "COCO_val2014_000000000001.jpg")
    prompts = pope.build_model_prompts(items)
    assert prompts[0]["text"] == "Is there a dog in the image? 1\nAnswer the question using a single word or phrase."
    assert prompts[0]["question_id"] == "random-1" and prompts[0]["category"] == "random"
    pope.write_answers(tmp_path / "answers.jsonl", {"random-1": "Yes", "random-2": "No"}, model_id="toy")
    assert pope.read_answers(tmp_path / "answers.jsonl") == {"random-1": "Yes", "random-2": "No"}


def test_llava_question_file_ids_are_remapped(tmp_path):
    write_pope(tmp_path)
    # LLaVA's question file numbers its questions itself and adds the category
    rows, answers = [], {}
    for n, (split, qid) in enumerate([(s, q) for s in pope.SPLITS for q in range(1, 5)]):
        s_index = pope.SPLITS.index(split)
        rows.append({"question_id": 1000 + n, "image": f"COCO_val2014_{s_index * 4 + qid:012d}.jpg",
                     "text": f"Is there a dog in the image? {qid}" + pope.LLAVA_SUFFIX, "category": split})
        answers[1000 + n] = ANSWERS[split][qid - 1]
    with open(tmp_path / "llava_pope_test.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    pope.write_answers(tmp_path / "answers.jsonl", answers)
    result = pope.score_file(tmp_path / "answers.jsonl", tmp_path, verify_hash=False,
                             question_file=tmp_path / "llava_pope_test.jsonl")
    assert result["f1_mean"] == pytest.approx(0.7)  # the same as the llava protocol case above


def test_wrong_file_and_duplicate_answers_are_named(tmp_path):
    write_pope(tmp_path)
    with pytest.raises(BenchmarkDataError, match="coco_pope_random.json"):
        pope.load(tmp_path)  # the synthetic file is not a known POPE version
    with open(tmp_path / "dup.jsonl", "w") as f:
        f.write('{"question_id": "random-1", "text": "Yes"}\n{"question_id": "random-1", "text": "No"}\n')
    with pytest.raises(ValueError, match="answered twice"):
        pope.read_answers(tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match="unknown protocol"):
        pope.score([], {}, protocol="official")


REAL_DATA = os.environ.get("MMALIGN_BENCH_DATA")


@pytest.mark.skipif(not REAL_DATA, reason="set MMALIGN_BENCH_DATA to a folder with the real benchmark files")
def test_real_files_match_known_versions():
    if not (Path(REAL_DATA) / "pope").is_dir():
        pytest.skip(f"pope/ not under {REAL_DATA}")
    seen = check_files("pope", REAL_DATA, pope.REQUIRED_FILES)  # §12 hashes first
    assert all(digest in pope.VERSIONS for digest in seen.values())
    items = pope.load(REAL_DATA)
    sizes = {split: sum(it["split"] == split for it in items) for split in pope.SPLITS}
    assert sizes in ({"random": 3000, "popular": 3000, "adversarial": 3000},
                     {"random": 2910, "popular": 3000, "adversarial": 3000})
