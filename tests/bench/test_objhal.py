"""Object HalBench (CHAIR, RLHF-V protocol) on the mini-COCO fixture of benchmarks.md §13: 3 images, 2 captions
each, empty-but-present train files and a 6-line synonyms excerpt. Expected values are worked out in the
comments; the rule path must give them with the rule lemmatiser and (when present) with WordNet."""
import base64
import json
import os
from pathlib import Path

import pytest

from mmalign_utils.bench import objhal
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.bench.nlp import (DEBIAN_WORDNET_DIR, _nltk_importable, approximate_toolkit,
                                     prepare_wordnet_from_debian, wordnet_lemmatizer)
from mmalign_utils.judges.base import ScriptedJudge

# A synthetic stand-in for RLHF-V's prompt_template (the official text is not shipped), same placeholders.
SYNTHETIC_PROMPT = ("Synthetic extractor.\n<image> {question}\n[Start of Examiner's Answer]\n\n{answer}\n\n"
                    "[End of Examiner's Answer]\nList the visible objects as a JSON list.")
SYNONYMS = [
    "person, girl, boy, man, woman, people, child",
    "dog, puppy, pup, canine",
    "chair, seat, stool",
    "dining table, table, desk, coffee table",
    "toilet, urinal, commode",
    "elephant",
]
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"},
              {"id": 67, "name": "dining table"}, {"id": 70, "name": "toilet"}]
INSTANCES = [(101, 1), (101, 18), (101, 67), (102, 70), (103, 62)]
CAPTIONS = [(101, "A man and his dog at a table."), (101, "People eating dinner."),
            (102, "A white toilet in a small bathroom."), (102, "A bathroom with a toilet."),
            (103, "A baby elephant stands near a chair."), (103, "An elephant calf in a zoo.")]
QUESTIONS = [(0, 101, "Describe this image in detail."), (1, 102, "What is in the picture?"),
             (2, 103, "Describe the image.")]
RESPONSES = {
    "0": "Two dogs and a man near a dining table.",  # plurals, a double word, person via "man"
    "1": "A toilet seat and a chair. The chair is red.",  # toilet without seat; chair hallucinated twice
    "2": "A cat.",  # no COCO mention
}


def write_data(root, questions=QUESTIONS):
    (root / "objhal").mkdir(parents=True)
    image = base64.b64encode(b"not really a jpeg").decode()
    with open(root / "objhal" / "obj_halbench_300_with_image.jsonl", "w") as f:
        for org_idx, image_id, question in questions:
            f.write(json.dumps({"org_idx": org_idx, "image_id": image_id, "question": question, "image": image}) + "\n")
    (root / "objhal" / "synonyms_refine.txt").write_text("\n".join(SYNONYMS) + "\n")
    coco = root / "coco" / "annotations"
    coco.mkdir(parents=True)
    val = {"images": [{"id": i} for i in (101, 102, 103)], "categories": CATEGORIES,
           "annotations": [{"image_id": i, "category_id": c} for i, c in INSTANCES]}
    (coco / "instances_val2014.json").write_text(json.dumps(val))
    (coco / "instances_train2014.json").write_text(json.dumps({"images": [], "annotations": [],
                                                               "categories": CATEGORIES}))
    (coco / "captions_val2014.json").write_text(json.dumps(
        {"annotations": [{"image_id": i, "caption": c} for i, c in CAPTIONS]}))
    (coco / "captions_train2014.json").write_text(json.dumps({"annotations": []}))
    return root


def wordnet_toolkit(tmp_path_factory):
    if not _nltk_importable() or not (DEBIAN_WORDNET_DIR / "data.noun").exists():
        pytest.skip("WordNet not available (needs nltk and apt-get install wordnet-base wordnet-sense-index)")
    lemmatize = wordnet_lemmatizer(prepare_wordnet_from_debian(tmp_path_factory.mktemp("nltk_data")))
    if lemmatize is None:
        pytest.skip("WordNet did not load")
    return approximate_toolkit(lemmatize)


@pytest.fixture(params=["rules", pytest.param("wordnet", marks=pytest.mark.slow)])
def toolkit(request, tmp_path_factory):
    return approximate_toolkit() if request.param == "rules" else wordnet_toolkit(tmp_path_factory)


@pytest.fixture
def synonyms():
    return objhal.Synonyms.from_lines(SYNONYMS)


def test_ground_truth_from_instances_and_captions(tmp_path, toolkit):
    items = objhal.load(write_data(tmp_path), verify_hash=False, nlp=toolkit)
    assert [it["gt_objects"] for it in items] == [
        ["dining table", "dog", "person"],  # instances; the captions name the same classes
        ["toilet"],
        ["chair", "elephant"],  # elephant only from the captions ("a baby elephant" -> elephant)
    ]


def test_rule_path_chair_metrics(tmp_path, toolkit, synonyms):
    items = objhal.load(write_data(tmp_path), verify_hash=False, nlp=toolkit)
    result = objhal.score(items, RESPONSES, synonyms=synonyms, nlp=toolkit)
    # response 0: dog, person (man), dining table -> 3 mentions, none hallucinated, 3 correct classes
    # response 1: toilet seat -> toilet; chair twice -> 3 mentions, 2 hallucinated; 1 correct class
    # response 2: no COCO mention
    assert result["per_item"][0]["mentions"] == [("dog", "dog"), ("man", "person"), ("dining table", "dining table")]
    assert result["per_item"][1]["hallucinated"] == [("chair", "chair"), ("chair", "chair")]
    assert result["CHAIRs"] == pytest.approx(1 / 3)  # 1 hallucinating response of 3
    assert result["CHAIRs_refine"] == pytest.approx(1 / 2)  # of the 2 responses with a COCO mention
    assert result["CHAIRi"] == pytest.approx(2 / 6)  # every occurrence counts
    assert result["obj_rec"] == pytest.approx(4 / 6)  # (3 + 1 + 0) / (3 + 1 + 2)
    assert result["avg_word_len"] == pytest.approx(21 / 3)  # 9 + 10 + 2 words split on " "
    assert (result["coco_sentence_num"], result["coco_mentions"], result["hallucinated_mentions"]) == (2, 6, 2)
    assert result["headline_metric"] == "CHAIRs_refine" and result["protocol"] == "rule"


def test_double_words_and_toilet_seat(synonyms):
    toolkit = approximate_toolkit()
    mentions, _ = objhal.caption_to_words("The seat of the toilet is up.", synonyms, toolkit)
    assert mentions == [("toilet", "toilet")]  # seat dropped when toilet occurs
    assert objhal.caption_to_words("A seat.", synonyms, toolkit)[0] == [("seat", "chair")]
    assert objhal.caption_to_words("An adult dog and a baby elephant.", synonyms, toolkit)[0] == [
        ("dog", "dog"), ("elephant", "elephant")]


def test_gpt_path_with_scripted_judge(tmp_path, synonyms):
    toolkit = approximate_toolkit()
    items = objhal.load(write_data(tmp_path), verify_hash=False, nlp=toolkit)
    replies = {RESPONSES["0"]: '["dogs", "man", "dining table"]',
               RESPONSES["1"]: 'Objects:\n["toilet seat", "chair", "chair"]'}  # the list on the last line

    def reply(request):
        prompt = request.messages[-1]["content"]
        answer = prompt.split("[Start of Examiner's Answer]\n\n")[1].split("\n\n[End of")[0]
        return replies[answer]

    judge = ScriptedJudge(reply)
    result = objhal.score(items, RESPONSES, protocol="gpt", judge=judge, synonyms=synonyms, nlp=toolkit,
                          extraction_prompt=SYNTHETIC_PROMPT)
    assert result["judge_calls"] == 2  # "A cat." has <= 3 words: no call, no objects
    # response 0: dog, man -> person, dining table (double word); response 1: toilet (from "toilet seat"), chair
    # de-duplicated -> mentions 3 + 2, hallucinated 1 (chair once)
    assert result["per_item"][1]["words"] == ["toilet", "chair"]
    assert result["CHAIRs"] == pytest.approx(1 / 3) and result["CHAIRs_refine"] == pytest.approx(1 / 2)
    assert result["CHAIRi"] == pytest.approx(1 / 5) and result["obj_rec"] == pytest.approx(4 / 6)
    prompt = judge.requests[0].messages[-1]["content"]
    assert "<image> Describe this image in detail.\n" in prompt and result["judge"] == "scripted:test"
    assert result["fidelity"] == "approximate"


def test_gpt_path_unreadable_reply_counts_as_unparsed(tmp_path, synonyms):
    items = objhal.load(write_data(tmp_path), verify_hash=False, nlp=approximate_toolkit())
    judge = ScriptedJudge(lambda request: "I see a dog and a man")
    result = objhal.score(items, RESPONSES, protocol="gpt", judge=judge, synonyms=synonyms, nlp=approximate_toolkit(),
                          extraction_prompt=SYNTHETIC_PROMPT)
    assert result["unparsed"] == 2 and result["judge_calls"] == 6  # 3 tries for each of the 2 long responses
    assert result["coco_mentions"] == 0 and result["CHAIRs"] == 0.0
    with pytest.raises(ValueError, match="needs a judge"):
        objhal.score(items, RESPONSES, protocol="gpt", synonyms=synonyms, extraction_prompt=SYNTHETIC_PROMPT)
    with pytest.raises(ValueError, match="extraction_prompt"):
        objhal.score(items, RESPONSES, protocol="gpt", synonyms=synonyms, judge=judge)


def test_extraction_prompt_is_read_from_the_script_and_hash_checked(tmp_path):
    script = tmp_path / "eval_gpt_obj_halbench.py"
    script.write_text("raise SystemExit('parse me, do not run me')\n"
                      f"prompt_template = {SYNTHETIC_PROMPT!r}\n")
    assert objhal.load_extraction_prompt(script, verify_hash=False) == SYNTHETIC_PROMPT
    with pytest.raises(BenchmarkDataError, match="not the known version"):  # §12: 912 chars, 9d732f9b...
        objhal.load_extraction_prompt(script)
    with pytest.raises(BenchmarkDataError, match="missing"):
        objhal.load_extraction_prompt(tmp_path / "nowhere.py")


def test_parse_object_list():
    assert objhal.parse_object_list('["a", "b"]') == ["a", "b"]
    assert objhal.parse_object_list('Here:\n["cat"]') == ["cat"]
    assert objhal.parse_object_list("cat, dog") is None and objhal.parse_object_list('{"a": 1}') is None


def test_round_trip_two_items(tmp_path):
    root = write_data(tmp_path, QUESTIONS[:2])
    items = objhal.load(root, verify_hash=False, with_ground_truth=False)
    assert [(it["id"], it["image_id"]) for it in items] == [(0, 101), (1, 102)]
    prompts = objhal.build_model_prompts(items)
    assert prompts[1] == {"question_id": 1, "image_id": 102, "image": items[1]["image"],
                          "text": "What is in the picture?"}
    # RLHF-V answer files may lack ids: answers then follow the question file's line order
    with open(tmp_path / "answers.jsonl", "w") as f:
        f.write('{"question": "q", "answer": "Assistant: A dog."}\n{"prompt": "q", "text": "A toilet."}\n')
    assert objhal.read_answers(tmp_path / "answers.jsonl") == {"0": "A dog.", "1": "A toilet."}
    objhal.write_answers(tmp_path / "mine.jsonl", {"0": "A dog.", "1": "A toilet."})
    assert objhal.read_answers(tmp_path / "mine.jsonl") == {"0": "A dog.", "1": "A toilet."}


def test_errors_name_the_problem(tmp_path, synonyms):
    root = write_data(tmp_path)
    with pytest.raises(BenchmarkDataError, match="synonyms_refine.txt"):
        objhal.load(root, nlp=approximate_toolkit())  # the excerpt is not the known file
    items = objhal.load(root, verify_hash=False, nlp=approximate_toolkit())
    with pytest.raises(ValueError, match="no answer"):
        objhal.score(items, {"0": "A dog."}, synonyms=synonyms, nlp=approximate_toolkit())
    partial = objhal.score(items, {"0": "A dog."}, synonyms=synonyms, nlp=approximate_toolkit(), only_answered=True)
    assert partial["n"] == 1 and partial["CHAIRs"] == 0.0


def test_score_file(tmp_path):
    root = write_data(tmp_path)
    objhal.write_answers(tmp_path / "answers.jsonl", RESPONSES)
    result = objhal.score_file(tmp_path / "answers.jsonl", root, verify_hash=False, nlp=approximate_toolkit())
    assert result["CHAIRi"] == pytest.approx(2 / 6) and result["nlp"]["lemmatizer"] == "rules (approximate)"


REAL_DATA = os.environ.get("MMALIGN_BENCH_DATA")


@pytest.mark.skipif(not REAL_DATA, reason="set MMALIGN_BENCH_DATA to a folder with the real benchmark files")
def test_real_files_pass_hash_checks():
    if not (Path(REAL_DATA) / "objhal").is_dir():
        pytest.skip(f"objhal/ not under {REAL_DATA}")
    items = objhal.load(REAL_DATA, with_ground_truth=False)  # §12 hash of synonyms_refine.txt first
    assert len(items) == 300 and len({it["image_id"] for it in items}) == 300
    assert len(objhal.Synonyms.from_file(Path(REAL_DATA) / "objhal" / "synonyms_refine.txt").canonical) > 80
    script = Path(REAL_DATA) / objhal.EXTRACTION_PROMPT_FILE
    if script.exists():
        assert len(objhal.load_extraction_prompt(script)) == 912  # hash-checked against §12
