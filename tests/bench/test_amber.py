"""AMBER scorer against the hand-computed fixture of benchmarks.md §13 (generative CHAIR/Cover/Hal/Cog and the
discriminative task with "No" as the positive class). Every expected value is derived in the comments; the
0.001 starting counters of data/metrics.txt appear in every denominator."""
import json
import os
from pathlib import Path

import pytest

from mmalign_utils.bench import amber
from mmalign_utils.bench.common import BenchmarkDataError
from mmalign_utils.bench.nlp import approximate_toolkit

RELATION = {"dog": ["puppy"], "sofa": ["couch"], "person": ["man", "woman"], "cat": ["kitten"], "ball": [],
            "table": []}
SAFE_WORDS = ["light"]
ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "sofa", "person"], "hallu": ["cat", "ball"]},
    {"id": 2, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 3, "type": "discriminative-attribute-state", "truth": "yes"},
    {"id": 4, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 5, "type": "discriminative-attribute-number", "truth": "yes"},
    {"id": 6, "type": "discriminative-relation", "truth": "yes"},
    {"id": 7, "type": "relation", "truth": "no"},
]
QUERIES = [{"id": 1, "image": "AMBER_1.jpg", "query": "Describe this image."}] + [
    {"id": i, "image": f"AMBER_{i}.jpg", "query": f"Is there a thing {i} in this image?"} for i in range(2, 8)]
RESPONSES = {
    "1": "A man sits on a couch with a puppy and a kitten near a table.",
    "2": "No, it is not.",  # normalised to "No": right
    "3": "Yes",  # right
    "4": "yes",  # neither Yes nor No (case-sensitive): wrong
    "5": "No",  # wrong, and a "No" answer
    "6": "Yes",  # right
    "7": "No",  # right
}


def write_amber(root, annotations=ANNOTATIONS, queries=QUERIES):
    (root / "amber" / "query").mkdir(parents=True)
    (root / "amber" / "annotations.json").write_text(json.dumps(annotations))
    (root / "amber" / "relation.json").write_text(json.dumps(RELATION))
    (root / "amber" / "safe_words.txt").write_text("\n".join(SAFE_WORDS))
    (root / "amber" / "query" / "query_all.json").write_text(json.dumps(queries))
    return root


@pytest.fixture
def items(tmp_path):
    return amber.load(write_amber(tmp_path), verify_hash=False)


def score(items, responses, **kw):
    kw.setdefault("nlp", approximate_toolkit())
    return amber.score(items, responses, relation=RELATION, safe_words=SAFE_WORDS, **kw)


def test_generative_chair_cover_hal_cog(items):
    result = score(items, RESPONSES)
    gen = result["generative"]
    # nouns in the vocabulary: man, couch, puppy, kitten, table (5). man -> person, couch -> sofa, puppy -> dog are
    # covered; kitten is a cog hit for cat and, like table, a hallucinated mention.
    assert result["per_item"][0]["mentions"] == ["man", "couch", "puppy", "kitten", "table"]
    assert result["per_item"][0]["hallucinated"] == ["kitten", "table"]
    assert gen["CHAIR"] == 40.0  # 2 / 5.001 = 39.992 -> 40.0
    assert gen["Cover"] == 100.0  # 3 / 3.001 = 99.97 -> 100.0
    assert gen["Hal"] == 100.0  # 100 - 0 / 1.001 * 100
    assert gen["Cog"] == 50.0  # 1 / 2.001 = 49.98 -> 50.0
    assert (gen["mentions"], gen["hallucinated_mentions"], gen["covered_objects"], gen["cog_hits"]) == (5, 2, 3, 1)


def test_discriminative_no_is_positive(items):
    disc = score(items, RESPONSES)["discriminative"]
    # all 6: correct ids 2, 3, 6, 7 -> 4 / 6.001 = 66.66 -> 66.7; "No" answers ids 2, 5, 7 of which truth-no 2, 7
    # -> P = 2 / 3.001 = 66.64 -> 66.6; truth-no ids 2, 4, 7 answered No: 2, 7 -> R = 66.6;
    # F1 = 2 * .666 * .666 / (1.332 + 1e-4) = 0.66595 -> 66.6
    assert (disc["all"]["acc"], disc["all"]["precision"], disc["all"]["recall"], disc["all"]["f1"]) == \
        (66.7, 66.6, 66.6, 66.6)
    assert disc["all"]["unparsed"] == 1  # "yes"
    # existence (id 2, right): 1 / 1.001 = 99.9 for acc, P, R; F1 = 1.996002 / (1.998 + 1e-3) = 0.99850 -> 99.9
    assert disc["existence"] == {**disc["existence"], "acc": 99.9, "precision": 99.9, "recall": 99.9, "f1": 99.9}
    # attribute (ids 3, 4, 5; three 0.001 counters): acc 1 / 3.003 = 33.3; P = 0 / 1.003; R = 0 / 1.003; F1 0
    assert (disc["attribute"]["acc"], disc["attribute"]["precision"], disc["attribute"]["recall"],
            disc["attribute"]["f1"]) == (33.3, 0.0, 0.0, 0.0)
    assert disc["state"]["acc"] == 50.0  # 1 / 2.001 = 49.975 -> 50.0
    assert disc["number"]["acc"] == 0.0 and "action" not in disc
    # relation (ids 6 yes, 7 no; both types): acc 2 / 2.001 -> 100.0; P = R = 1 / 1.001 = 99.9;
    # F1 = 1.996002 / (1.998 + 1e-4) = 0.99895 -> 99.9
    assert (disc["relation"]["acc"], disc["relation"]["precision"], disc["relation"]["recall"],
            disc["relation"]["f1"]) == (100.0, 99.9, 99.9, 99.9)


def test_amber_score_and_bookkeeping(items):
    result = score(items, RESPONSES)
    assert result["amber_score"] == pytest.approx(63.3)  # (100 - 40.0 + 66.6) / 2
    assert (result["CHAIR"], result["Cog"], result["f1"], result["acc"]) == (40.0, 50.0, 66.6, 66.7)  # flat copies
    assert (result["n"], result["n_generative"], result["n_discriminative"], result["unparsed"]) == (7, 1, 6, 1)
    assert result["nlp"]["pos_tagger"] == "none (vocabulary lookup)" and result["fidelity"] == "approximate"
    assert result["nlp"]["similarity"] is None and result["normalize"] == "first_word"


def test_existence_uses_the_larger_f1_epsilon(tmp_path):
    # 4 truth-no questions answered No, No, Yes, Yes: P = 2 / 2.001 = 99.95 -> 100.0, R = 2 / 4.001 = 49.99 -> 50.0
    answers = {"1": "No", "2": "No", "3": "Yes", "4": "Yes"}
    for kind, expected_f1 in (("discriminative-hallucination", 66.6),  # 2 * 1 * .5 / (1.5 + 1e-3) = 0.66622
                              ("relation", 66.7)):  # 2 * 1 * .5 / (1.5 + 1e-4) = 0.66662
        annotations = [{"id": i, "type": kind, "truth": "no"} for i in range(1, 5)]
        queries = [{"id": i, "image": f"AMBER_{i}.jpg", "query": "?"} for i in range(1, 5)]
        items = amber.load(write_amber(tmp_path / kind, annotations, queries), verify_hash=False)
        dim = "existence" if kind.endswith("hallucination") else "relation"
        metrics = amber.score(items, answers)["discriminative"][dim]
        assert (metrics["precision"], metrics["recall"], metrics["f1"], metrics["acc"]) == (100.0, 50.0,
                                                                                            expected_f1, 50.0)


def test_attribute_row_sums_three_counters(tmp_path):
    annotations = [{"id": 1, "type": "discriminative-attribute-action", "truth": "no"}]
    items = amber.load(write_amber(tmp_path, annotations, [{"id": 1, "image": "AMBER_1.jpg", "query": "?"}]),
                       verify_hash=False)
    disc = amber.score(items, {"1": "No"})["discriminative"]
    assert disc["attribute"]["acc"] == 99.7  # 1 / (1 + 3 * 0.001)
    assert disc["action"]["acc"] == 99.9  # 1 / 1.001


def test_normalisation_modes(items):
    official = score(items, RESPONSES, normalize="none")["discriminative"]["existence"]
    assert official["acc"] == 0.0 and official["unparsed"] == 1  # "No, it is not." is neither in raw form
    lenient = score(items, RESPONSES, normalize="casefold")["discriminative"]
    assert lenient["all"]["unparsed"] == 0 and lenient["state"]["acc"] == 50.0  # "yes" -> "Yes" now wrong for id 4
    with pytest.raises(ValueError, match="normalize"):
        score(items, RESPONSES, normalize="lower")


def test_similarity_is_off_by_default_and_pluggable(tmp_path):
    relation = {"dog": [], "pup": [], "cat": []}
    items = [{"id": 1, "dimension": "generative", "truth": ["dog"], "hallu": ["cat"]}]
    answers = {"1": "A pup sleeps."}
    plain = amber.score(items, answers, relation=relation, nlp=approximate_toolkit())["generative"]
    # "pup" is a vocabulary word matching neither truth nor hallu: hallucinated, dog not covered
    assert (plain["CHAIR"], plain["Cover"], plain["Hal"], plain["Cog"]) == (99.9, 0.0, 100.0, 0.0)

    def fake_similarity(a, b):
        return 1.0 if a == b else 0.9 if {a, b} == {"pup", "dog"} else 0.0

    similar = amber.score(items, answers, relation=relation, nlp=approximate_toolkit(),
                          similarity=fake_similarity)["generative"]
    # pup ~ dog (0.9 > 0.8) covers dog: CHAIR 0 / 1.001, Cover 1 / 1.001 = 99.9, Hal 100 - 99.9 = 0.1
    assert (similar["CHAIR"], similar["Cover"], similar["Hal"], similar["Cog"]) == (0.0, 99.9, 0.1, 0.0)


def test_safe_words_count_in_the_denominator_only():
    relation = {"dog": [], "light": []}
    items = [{"id": 1, "dimension": "generative", "truth": ["dog"], "hallu": []}]
    gen = amber.score(items, {"1": "A dog under a light."}, relation=relation, safe_words=["light"],
                      nlp=approximate_toolkit())["generative"]
    assert gen["mentions"] == 2 and gen["hallucinated_mentions"] == 0 and gen["CHAIR"] == 0.0


def test_pos_tagger_is_pluggable():
    relation = {"dog": [], "table": []}
    items = [{"id": 1, "dimension": "generative", "truth": ["dog"], "hallu": []}]
    answers = {"1": "They table the motion near a dog."}
    fallback = amber.score(items, answers, relation=relation, nlp=approximate_toolkit())["generative"]
    assert fallback["CHAIR"] == 50.0  # "table" (a verb here) counts: 1 / 2.001 = 49.98 -> 50.0
    tagged = approximate_toolkit()
    tagged.pos_tag = lambda tokens: [(t, "VBP" if t == "table" else "NN") for t in tokens]
    result = amber.score(items, answers, relation=relation, nlp=tagged)
    assert result["generative"]["CHAIR"] == 0.0 and result["generative"]["mentions"] == 1


def test_round_trip_two_items(tmp_path):
    # query ids index annotations.json at id - 1: query 2 must get the discriminative entry
    root = write_amber(tmp_path, ANNOTATIONS[:2], QUERIES[:2])
    items = amber.load(root, verify_hash=False)
    assert [(it["id"], it["dimension"]) for it in items] == [(1, "generative"), (2, "existence")]
    assert items[1]["label"] == "no" and items[0]["truth"] == ["dog", "sofa", "person"]
    assert items[0]["image_path"] == str(root / "amber" / "image" / "AMBER_1.jpg")
    assert amber.build_model_prompts(items)[0] == {"question_id": 1, "image": "AMBER_1.jpg",
                                                   "text": "Describe this image."}
    amber.write_answers(tmp_path / "responses.json", {"1": "A dog.", "2": "No"})
    assert json.loads((tmp_path / "responses.json").read_text())[1] == {"id": 2, "response": "No"}
    assert amber.read_answers(tmp_path / "responses.json") == {"1": "A dog.", "2": "No"}


def test_errors_name_the_problem(tmp_path, items):
    with pytest.raises(BenchmarkDataError, match="annotations.json"):
        amber.load(tmp_path)  # synthetic files are not the known versions
    with pytest.raises(ValueError, match="no response"):
        score(items, {"1": "A dog."})
    with pytest.raises(ValueError, match="relation"):
        amber.score(items, RESPONSES)
    bad = write_amber(tmp_path / "bad", ANNOTATIONS[:1], [{"id": 9, "image": "x.jpg", "query": "?"}])
    with pytest.raises(ValueError, match="id - 1"):
        amber.load(bad, verify_hash=False)


def test_score_file_scores_what_was_answered(tmp_path):
    write_amber(tmp_path)
    amber.write_answers(tmp_path / "responses.json", {"1": RESPONSES["1"]})
    result = amber.score_file(tmp_path / "responses.json", tmp_path, verify_hash=False, nlp=approximate_toolkit())
    assert result["n"] == 1 and result["generative"]["CHAIR"] == 40.0 and "discriminative" not in result


REAL_DATA = os.environ.get("MMALIGN_BENCH_DATA")


@pytest.mark.skipif(not REAL_DATA, reason="set MMALIGN_BENCH_DATA to a folder with the real benchmark files")
def test_real_files_pass_hash_checks():
    if not (Path(REAL_DATA) / "amber").is_dir():
        pytest.skip(f"amber/ not under {REAL_DATA}")
    items = amber.load(REAL_DATA)  # §12 hashes first
    assert len(items) == 15220 and sum(it["dimension"] == "generative" for it in items) == 1004
