"""Import of the paper's released files, LLaVA JSON both ways, TRL-format helpers (mmalign_utils.formats).

The fixture files are written by hand in the released schema (paper-recipe.md §7): a `question` that is a dict,
one that is a stringified Python dict (the paper's loader uses ast.literal_eval), and a record whose `chosen` /
`rejected` are whole conversations.
"""
from __future__ import annotations

import json

import pytest
from PIL import Image

from mmalign_utils.formats import (
    PaperRecordError, export_llava_conversations, import_llava_conversations, import_paper_dpo_json,
    messages_to_prompt_completion, strip_image_token, trl_preference_view,
)
from mmalign_utils.preference import AnnotatedPrompt, build_dpo_pairs, build_steerlm


def scores(suffix: str, h: int, c: int, k: int, x: int, v: int, total: int | None = None) -> dict:
    fields = {f"Helpfulness{suffix}": h, f"Correctness{suffix}": c, f"Coherence{suffix}": k,
              f"Complexity{suffix}": x, f"Verbosity{suffix}": v}
    if total is not None:
        fields[f"Sum_of_helpfulness_correctness_coherence{suffix}"] = total
    return fields


def paper_records() -> list[dict]:
    return [
        {   # question as a dict, chosen / rejected as single gpt turns
            "image": "lrv_image_folder/1.jpg",
            "question": {"from": "human", "value": "<image>\nWhat color is the bus?"},
            "chosen": {"from": "gpt", "value": "The bus is red."},
            "rejected": {"from": "gpt", "value": "Blue."},
            **scores("_gpt4v", 4, 4, 3, 2, 2, total=11), **scores("_candidate", 1, 0, 3, 1, 1, total=4),
            "ref_win_logp": -12.5, "ref_rej_logp": -3.25, "ref_win_avg_logp": -1.1, "ref_rej_avg_logp": -1.6,
            "ref_win_per_token_logp": [-1.0, -2.0], "ref_rej_per_token_logp": [-3.0],
        },
        {   # question as a stringified Python dict (single quotes), scores as floats, SciGraphQA image
            "image": "scigraph/fig_2.png",
            "question": "{'from': 'human', 'value': '<image>\\nWhat trend does the graph show?'}",
            "chosen": {"from": "gpt", "value": "Accuracy rises with model size."},
            "rejected": {"from": "gpt", "value": "It is a graph."},
            **scores("_gpt4v", 4.0, 3.0, 4.0, 3.0, 2.0), **scores("_candidate", 2.0, 1.0, 3.0, 0.0, 1.0),
            "ref_win_logp": -20.0, "ref_rej_logp": -8.0,
        },
        {   # chosen / rejected as whole conversations; the question field is not used
            "image": "lrv_image_folder/3.jpg",
            "chosen": [{"from": "human", "value": "Is there a dog?\n<image>"},
                       {"from": "gpt", "value": "No, there is a cat on the sofa."}],
            "rejected": [{"from": "human", "value": "Is there a dog?\n<image>"},
                         {"from": "gpt", "value": "Yes."}],
            **scores("_gpt4v", 4, 4, 4, 1, 2, total=12), **scores("_candidate", 0, 0, 4, 0, 0, total=4),
            "ref_win_logp": -30.0, "ref_rej_logp": -2.0,
        },
    ]


def make_images(root, names_and_shades) -> None:
    for name, shade in names_and_shades:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 4), (shade, 0, 0)).save(path)


@pytest.fixture
def paper_file(tmp_path):
    make_images(tmp_path / "images", [("lrv_image_folder/1.jpg", 10), ("scigraph/fig_2.png", 20),
                                      ("lrv_image_folder/3.jpg", 30)])
    path = tmp_path / "dpo.json"
    path.write_text(json.dumps(paper_records()))
    return path, tmp_path / "images"


def user(text: str, image: bool = True) -> dict:
    return {"role": "user", "content": ([{"type": "image", "text": None}] if image else [])
            + [{"type": "text", "text": text}]}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


# ---------------------------------------------------------------------------------------------- paper DPO file

def test_import_paper_dpo_json_three_records(paper_file):
    path, root = paper_file
    ds = import_paper_dpo_json(path, root)
    assert len(ds) == 3
    r0, r1, r2 = ds[0], ds[1], ds[2]
    assert r0["prompt"] == [user("What color is the bus?")]
    assert r0["chosen"] == [assistant("The bus is red.")] and r0["rejected"] == [assistant("Blue.")]
    assert (r0["chosen_helpfulness"], r0["chosen_correctness"], r0["chosen_coherence"], r0["chosen_complexity"],
            r0["chosen_verbosity"], r0["chosen_quality"]) == (4, 4, 3, 2, 2, 11)
    assert (r0["rejected_helpfulness"], r0["rejected_correctness"], r0["rejected_quality"]) == (1, 0, 4)
    assert (r0["margin"], r0["ref_chosen_logps"], r0["ref_rejected_logps"]) == (7.0, -12.5, -3.25)
    assert (r0["source"], r0["image_id"], r0["record_index"]) == ("lrv", "lrv_image_folder/1.jpg", 0)

    assert r1["prompt"] == [user("What trend does the graph show?")]
    assert r1["question"] == "What trend does the graph show?"
    # no Sum field: quality = 4 + 3 + 4 and 2 + 1 + 3
    assert (r1["chosen_quality"], r1["rejected_quality"], r1["margin"]) == (11, 6, 5.0)
    assert r1["source"] == "scigraphqa"

    # "<image>" at the end of the text still becomes an image part in front of the question
    assert r2["prompt"] == [user("Is there a dog?")]
    assert r2["chosen"] == [assistant("No, there is a cat on the sofa.")] and r2["rejected"] == [assistant("Yes.")]
    assert (r2["chosen_quality"], r2["ref_chosen_logps"]) == (12, -30.0)

    shades = [row["images"][0].getpixel((0, 0))[0] for row in ds]
    assert shades == [10, 20, 30]
    assert not any("<image>" in m["content"][-1]["text"] for row in ds for m in row["prompt"])
    assert "ref_win_per_token_logp" not in ds.column_names
    assert trl_preference_view(ds).column_names == ["images", "prompt", "chosen", "rejected", "ref_chosen_logps",
                                                    "ref_rejected_logps"]


def test_import_paper_json_question_as_json_string(tmp_path):
    make_images(tmp_path, [("a.png", 1)])
    record = {"image": "a.png", "question": json.dumps({"from": "human", "value": "<image>\nQ?"}),
              "chosen": {"from": "gpt", "value": "A"}, "rejected": {"from": "gpt", "value": "B"}}
    (tmp_path / "f.json").write_text(json.dumps([record]))
    ds = import_paper_dpo_json(tmp_path / "f.json", tmp_path)
    assert ds[0]["prompt"] == [user("Q?")]
    assert ds[0]["chosen_quality"] is None and ds[0]["margin"] is None  # no score fields in this record


@pytest.mark.parametrize("index, change, message", [
    (1, {"question": "{'from': 'human', 'value': "}, r"record 1, field 'question'"),
    (0, {"chosen": None}, r"record 0, field 'chosen'"),
    (2, {"Correctness_gpt4v": "high"}, r"record 2, field 'Correctness_gpt4v'"),
    (1, {"Verbosity_candidate": 7}, r"record 1, field 'Verbosity_candidate'.*outside 0-4"),
    (0, {"Sum_of_helpfulness_correctness_coherence_gpt4v": 10}, r"record 0.*states 10"),
    (0, {"ref_win_logp": "low"}, r"record 0, field 'ref_win_logp'"),
])
def test_malformed_paper_records_name_index_and_field(tmp_path, index, change, message):
    records = paper_records()
    records[index].update(change)
    if change.get("chosen", 1) is None:
        del records[index]["chosen"]
    (tmp_path / "bad.json").write_text(json.dumps(records))
    with pytest.raises(PaperRecordError, match=message):
        import_paper_dpo_json(tmp_path / "bad.json", tmp_path, check_images=False)


def test_paper_conversations_with_different_questions_are_refused(tmp_path):
    records = paper_records()
    records[2]["rejected"][0]["value"] = "Is there a cat?\n<image>"
    (tmp_path / "bad.json").write_text(json.dumps(records))
    with pytest.raises(PaperRecordError, match="record 2.*different questions"):
        import_paper_dpo_json(tmp_path / "bad.json", tmp_path, check_images=False)


def test_missing_image_is_named(paper_file):
    path, root = paper_file
    (root / "scigraph" / "fig_2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 3 images.*record 1: .*scigraph/fig_2.png"):
        import_paper_dpo_json(path, root)
    assert len(import_paper_dpo_json(path, root, check_images=False)) == 3


# ---------------------------------------------------------------------------------------------- LLaVA JSON

def test_import_llava_conversations(tmp_path):
    make_images(tmp_path, [("x.png", 5), ("y.png", 6)])
    records = [
        {"id": "a", "image": "x.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?\nhelpfulness:4,correctness:4,coherence:4,"
                                       "complexity:2,verbosity:2"},
            {"from": "gpt", "value": "A square."}]},
        {"image": "y.png", "conversations": [  # image but no token: the part goes first, as LLaVA's loader does
            {"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Green."},
            {"from": "human", "value": "More?"}, {"from": "gpt", "value": "No."}]},
        {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    (tmp_path / "sft.json").write_text(json.dumps(records))
    ds = import_llava_conversations(tmp_path / "sft.json", tmp_path)
    assert list(ds["prompt_id"]) == ["a", "sft-1", "t"]
    assert ds[0]["messages"] == [
        user("What is it?\nhelpfulness:4,correctness:4,coherence:4,complexity:2,verbosity:2"), assistant("A square.")]
    assert ds[1]["messages"] == [user("Describe."), assistant("Green."), user("More?", image=False), assistant("No.")]
    assert ds[2]["messages"] == [user("Hi", image=False), assistant("Hello")] and ds[2]["images"] == []
    assert ds[1]["images"][0].getpixel((0, 0)) == (6, 0, 0)


def test_import_llava_errors(tmp_path):
    bad = [{"image": "x.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                 {"from": "robot", "value": "A"}]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PaperRecordError, match=r"record 0.*'conversations'\[1\].*robot"):
        import_llava_conversations(tmp_path / "bad.json", tmp_path, check_images=False)
    two = [{"image": "x.png", "conversations": [{"from": "human", "value": "<image> <image> Q"},
                                                 {"from": "gpt", "value": "A"}]}]
    (tmp_path / "two.json").write_text(json.dumps(two))
    with pytest.raises(PaperRecordError, match="2 times"):
        import_llava_conversations(tmp_path / "two.json", tmp_path, check_images=False)
    good = [{"image": "x.png", "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                  {"from": "gpt", "value": "A"}]}]
    (tmp_path / "good.json").write_text(json.dumps(good))
    with pytest.raises(FileNotFoundError, match=r"record 0: .*x.png"):
        import_llava_conversations(tmp_path / "good.json", tmp_path)


def test_llava_round_trip(tmp_path):
    def sc(h: int) -> dict:
        return {"helpfulness": h, "correctness": 2, "coherence": 3, "complexity": 1, "verbosity": 0}
    prompts = [AnnotatedPrompt(f"p{i}", Image.new("RGB", (5, 7), (i * 40, 1, 2)), f"Question {i}?",
                               [f"answer {i}-{j}" for j in range(3)], [sc(j) for j in range(3)], source="shapes")
               for i in range(2)]
    ds = build_steerlm(prompts)
    json_path = export_llava_conversations(ds, tmp_path / "steerlm.json", tmp_path / "images")
    records = json.loads(json_path.read_text())
    assert len(records) == 6
    assert records[1]["conversations"] == [
        {"from": "human",
         "value": "<image>\nQuestion 0?\nhelpfulness:1,correctness:2,coherence:3,complexity:1,verbosity:0"},
        {"from": "gpt", "value": "answer 0-1"}]
    assert records[1]["id"] == "p0"
    assert len(list((tmp_path / "images").iterdir())) == 2  # one file per distinct image
    back = import_llava_conversations(json_path, tmp_path / "images")
    assert list(back["messages"]) == list(ds["messages"])
    assert list(back["prompt_id"]) == list(ds["prompt_id"])
    for a, b in zip(back["images"], ds["images"]):
        assert a[0].tobytes() == b[0].tobytes() and a[0].size == b[0].size


def test_export_refuses_preference_data(tmp_path):
    ds = build_dpo_pairs([AnnotatedPrompt("p", Image.new("RGB", (4, 4)), "q", ["a", "b"],
                                          [{"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 0,
                                            "verbosity": 0},
                                           {"helpfulness": 0, "correctness": 0, "coherence": 0, "complexity": 0,
                                            "verbosity": 0}])])
    with pytest.raises(ValueError, match="messages"):
        export_llava_conversations(ds, tmp_path / "x.json", tmp_path / "im")


# ---------------------------------------------------------------------------------------------- helpers

def test_strip_image_token():
    assert strip_image_token("<image>\nWhat?") == ("What?", 1)
    assert strip_image_token("What?\n<image>") == ("What?", 1)
    assert strip_image_token("No image") == ("No image", 0)


def test_messages_to_prompt_completion(tmp_path):
    p = AnnotatedPrompt("p", Image.new("RGB", (4, 4)), "q", ["a"],
                        [{"helpfulness": 1, "correctness": 1, "coherence": 1, "complexity": 1, "verbosity": 1}])
    ds = messages_to_prompt_completion(build_steerlm([p]))
    assert "messages" not in ds.column_names
    assert ds[0]["prompt"] == [user("q\nhelpfulness:1,correctness:1,coherence:1,complexity:1,verbosity:1")]
    assert ds[0]["completion"] == [assistant("a")]


@pytest.mark.slow  # importing trl takes about 6 s on these cores
def test_rows_are_accepted_by_trl_format_helpers():
    """TRL treats our rows as conversational and fills our image placeholder with the row's image."""
    from trl.data_utils import is_conversational, prepare_multimodal_messages
    image = Image.new("RGB", (4, 4), (9, 9, 9))
    p = AnnotatedPrompt("p", image, "q", ["good", "bad"],
                        [{"helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 0, "verbosity": 0},
                         {"helpfulness": 0, "correctness": 0, "coherence": 0, "complexity": 0, "verbosity": 0}])
    row = trl_preference_view(build_dpo_pairs([p]))[0]
    assert is_conversational(row)
    messages = prepare_multimodal_messages(row["prompt"] + row["chosen"], images=row["images"])
    image_parts = [part for m in messages for part in m["content"] if part["type"] == "image"]
    assert len(image_parts) == 1 and image_parts[0]["image"].tobytes() == image.tobytes()
