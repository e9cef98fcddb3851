"""Tests of the offline text instruction-following suite (mmalign_utils.textsuite).

Every expected number here was worked out by hand from the documented rule (textunits docstring, the IFEval
rule quoted in each checker), never by running our code.
"""
from __future__ import annotations

import math
import re

import pytest

from mmalign_utils.textsuite import (
    INSTRUCTION_TYPES,
    Instruction,
    SuiteScore,
    TextPrompt,
    count_sentences,
    count_words,
    empty_answer_rate,
    length_stats,
    load_text_suite,
    loose_variants,
    per_prompt_table,
    repetition_stats,
    score_response,
    score_suite,
    split_sentences,
    stem,
    topic_coverage,
    validate_kwargs,
    words,
)
from mmalign_utils.textsuite.checkers import check_instruction, compare
from mmalign_utils.textsuite.suite import instruction_passes, parse_prompts


def check(type_id: str, response: str, **kwargs) -> bool:
    validate_kwargs(type_id, kwargs)
    return check_instruction(type_id, response, kwargs)


def make_prompt(pid: str, instructions: list[tuple[str, dict]], keywords=("a", "b", "c", "d"),
                category: str = "test") -> TextPrompt:
    return TextPrompt(id=pid, split="heldout", category=category, difficulty="easy", prompt="(test prompt)",
                      instructions=tuple(Instruction(t, k) for t, k in instructions), topic_keywords=tuple(keywords))


# ------------------------------------------------------------------------------------------ word counter


@pytest.mark.parametrize("text, expected", [
    ("Hello, world!", 2),
    # Don't | stop | it's | 3.14 | or | 1,000 | apples | at | 10:30
    ("Don't stop: it's 3.14 or 1,000 apples at 10:30.", 9),
    # well-known | e.g. | U.S. | policy
    ("well-known e.g. U.S. policy", 4),
    ("* one\n* two\n- three", 3),  # bullet markers are not words
    ("1. first\n2. second", 4),  # list numbers are words ("1", "first", "2", "second")
    ("**bold** and _italic_", 3),
    ("I love it \U0001F600", 3),  # emoji is not a word
    ("", 0),
    ("*** --- !!", 0),
])
def test_count_words(text, expected):
    assert count_words(text) == expected


def test_words_keep_inner_joiners():
    assert words("a well-known 1,000-year-old don't") == ["a", "well-known", "1,000-year-old", "don't"]
    assert words("end.Next") == ["end", "Next"]  # a period between letters splits


# ------------------------------------------------------------------------------------- sentence splitter


def test_split_sentences_abbreviations_and_numbers():
    text = "Mr. Smith paid $3.50. That was cheap! Was it?"
    assert split_sentences(text) == ["Mr. Smith paid $3.50.", "That was cheap!", "Was it?"]


@pytest.mark.parametrize("text, expected", [
    ("We bought apples, pears, etc. and left.", 1),  # etc. + lowercase word: no split
    ("We bought apples, pears, etc. Then we left.", 2),  # etc. + capital: split
    ("J. K. Rowling wrote books.", 1),  # initials
    ("See e.g. the list. It is long.", 2),
    ("We went to the U.S. Then we left.", 2),
    ("The U.S. economy grew.", 1),
    ("Dr. Who arrived at 10 a.m. and left.", 1),
    ("It costs 2.5 dollars. Cheap.", 2),
    ("Wait... what?! Yes.", 3),
    ('She said "Stop." Then she left.', 2),
    ("roses are red\nviolets are blue.", 1),  # a wrapped line is not a break
    ("first para\n\nsecond para", 2),  # a blank line is
    ("Tips:\n- drink water\n- sleep well\n1. eat fruit", 4),  # each list item is a unit
    ("## Heading\nBody text here.", 2),
    ("this is lowercase. so is this. and this", 3),  # lowercase starts still split
    ("", 0),
    ("***\n\n---", 0),
])
def test_count_sentences(text, expected):
    assert count_sentences(text) == expected


def test_split_sentences_drops_list_markers():
    assert split_sentences("- one thing.\n* two things\n3) three") == ["one thing.", "two things", "three"]


# ---------------------------------------------------------------------------------------------- stemmer


@pytest.mark.parametrize("forms", [
    ("water", "watering", "watered", "waters"),
    ("make", "makes", "making"),
    ("study", "studies", "studied", "studying"),
    ("box", "boxes"),
    ("plant", "plants", "planted", "planting"),
    ("stop", "stopped", "stopping"),
    ("spring", "springs"),
    ("family", "families"),
    ("tree", "trees"),
    ("dog", "dog's", "dogs"),
])
def test_stem_joins_forms(forms):
    assert len({stem(f) for f in forms}) == 1


def test_stem_keeps_different_words_apart():
    assert stem("plant") != stem("planet")
    assert stem("sun") != stem("sunlight")
    assert stem("is") == "is" and stem("bus") == "bus"  # too short / -us: untouched


# --------------------------------------------------------------------------------------------- checkers


def test_compare_relations():
    assert compare(3, "less than", 4) and not compare(4, "less than", 4)
    assert compare(4, "at most", 4) and not compare(5, "at most", 4)
    assert compare(4, "at least", 4) and not compare(3, "at least", 4)
    assert compare(4, "exactly", 4) and not compare(5, "exactly", 4)
    with pytest.raises(ValueError, match="unknown relation"):
        compare(1, "around", 1)


def test_length_checkers():
    five = "one two three four five"
    assert check("length:words", five, relation="at least", num_words=5)
    assert not check("length:words", five, relation="less than", num_words=5)
    assert check("length:words", "Don't stop", relation="exactly", num_words=2)
    assert check("length:words_range", "a b c", min_words=3, max_words=5)
    assert not check("length:words_range", "a b c", min_words=4, max_words=5)
    assert check("length:sentences", "One. Two! Three?", relation="at least", num_sentences=3)
    assert not check("length:sentences", "One. Two! Three?", relation="less than", num_sentences=3)
    assert check("length:sentences", "One. Two! Three?", relation="at most", num_sentences=3)


def test_divider_paragraphs():
    assert check("length:paragraphs", "A\n***\nB\n***\nC", num_paragraphs=3)
    assert not check("length:paragraphs", "A\n***\nB\n***\nC", num_paragraphs=2)
    assert not check("length:paragraphs", "A\n***\n***\nC", num_paragraphs=2)  # empty middle paragraph
    assert check("length:paragraphs", "***\nA\n***\nB\n***", num_paragraphs=2)  # empty ends ignored
    assert not check("length:paragraphs", "A\n\nB", num_paragraphs=2)  # blank lines are not dividers


def test_blank_line_and_nth_paragraph():
    text = "A\n\nB\n  \nC"
    assert check("length:blank_line_paragraphs", text, relation="at least", num_paragraphs=3)
    assert not check("length:blank_line_paragraphs", text, relation="exactly", num_paragraphs=2)
    story = 'Once upon a time.\n\n"Suddenly, it rained."\n\nThe end.'
    assert check("length:nth_paragraph_first_word", story, num_paragraphs=3, nth_paragraph=2, first_word="suddenly")
    assert not check("length:nth_paragraph_first_word", story, num_paragraphs=3, nth_paragraph=1,
                     first_word="Suddenly")
    assert not check("length:nth_paragraph_first_word", story, num_paragraphs=2, nth_paragraph=2,
                     first_word="Suddenly")  # wrong paragraph count


def test_keyword_checkers():
    assert check("keywords:include", "WATER the plants", keywords=["water", "plant"])  # substring, any case
    assert not check("keywords:include", "Water the plants", keywords=["water", "sun"])
    assert check("keywords:forbidden", "I like cupcakes", forbidden_words=["cup"])  # whole words only
    assert not check("keywords:forbidden", "A CUP of tea", forbidden_words=["cup"])
    rain = "Rain, rain, go away; raining again."  # Rain + rain + raining = 3
    assert check("keywords:frequency", rain, keyword="rain", relation="at least", frequency=3)
    assert not check("keywords:frequency", rain, keyword="rain", relation="exactly", frequency=2)
    jam = "Mama made jam"  # M, m, m, m = 4
    assert check("keywords:letter_frequency", jam, letter="m", relation="at least", let_frequency=4)
    assert not check("keywords:letter_frequency", jam, letter="M", relation="less than", let_frequency=4)


def test_list_checkers():
    text = "* a\n* b\n- c\n**bold** line\n\u2022 not counted\n1. d"  # "* a", "* b", "- c" = 3
    assert check("format:bullets", text, relation="exactly", num_bullets=3)
    assert not check("format:bullets", text, relation="at least", num_bullets=4)
    numbered = "1. a\n2) b\n3.no space\n10. c"  # "1. a", "2) b", "10. c" = 3
    assert check("format:numbered_items", numbered, relation="exactly", num_items=3)
    assert not check("format:numbered_items", numbered, relation="at least", num_items=4)


def test_json_checker():
    assert check("format:json", '{"a": 1}')
    assert check("format:json", '```json\n{"a": [1, 2]}\n```')
    assert check("format:json", '```\n["x"]\n```')
    assert not check("format:json", 'Here is JSON: {"a": 1}')
    assert not check("format:json", '{"a": 1,}')


def test_title_and_highlight_checkers():
    assert check("format:title", "<<My Day>>\nText")
    assert not check("format:title", "<< >>\nText")
    assert not check("format:title", "<My Day>")
    assert not check("format:title", "<<My\nDay>>")
    assert check("format:highlighted_sections", "*one* and *two*", num_highlights=2)
    # "**bold**": the single-star pattern finds only empty "**" pairs, the double pattern finds one: 1 in all
    assert check("format:highlighted_sections", "**bold**", num_highlights=1)
    assert not check("format:highlighted_sections", "**bold**", num_highlights=2)
    assert not check("format:highlighted_sections", "* *", num_highlights=1)


def test_sections_and_constrained_response():
    text = "Section 1\nA\nSection 2\nB"
    assert check("format:sections", text, section_splitter="Section", num_sections=2)
    assert not check("format:sections", text, section_splitter="Section", num_sections=3)
    assert not check("format:sections", "section 1 a section 2 b", section_splitter="Section", num_sections=1)
    options = ["My answer is yes.", "My answer is no.", "My answer is maybe."]
    assert check("format:constrained_response", "My answer is yes. Because...", options=options)
    assert not check("format:constrained_response", "My answer is: yes", options=options)


def test_quotation_two_responses_repeat():
    assert check("format:quotation", '  "Hello there"\n')
    assert not check("format:quotation", '"Hello')
    assert not check("format:quotation", '"')
    assert check("format:two_responses", "A\n******\nB")
    assert check("format:two_responses", "******\nA\n******\nB")  # empty first piece is allowed
    assert not check("format:two_responses", "A\n******\nA")  # the two must differ
    assert not check("format:two_responses", "A\n******\n******\nB")  # empty middle piece
    assert not check("format:two_responses", "A")
    assert check("format:repeat_prompt", "tell me a joke. Why did...", prompt_to_repeat="Tell me a joke.")
    assert not check("format:repeat_prompt", "Sure! Tell me a joke.", prompt_to_repeat="Tell me a joke.")


def test_case_checkers():
    assert check("case:lowercase", "all lower 123")
    assert not check("case:lowercase", "Not lower")
    assert not check("case:lowercase", "123")  # no letter at all
    assert check("case:uppercase", "ALL CAPS 1")
    assert not check("case:uppercase", "ALL caps")
    caps = "I LOVE NASA and Paris"  # I, LOVE, NASA = 3
    assert check("case:capital_word_frequency", caps, relation="at least", capital_frequency=3)
    assert not check("case:capital_word_frequency", caps, relation="at least", capital_frequency=4)


def test_punctuation_start_end_content():
    assert check("punctuation:no_comma", "no commas here")
    assert not check("punctuation:no_comma", "one, two")
    assert check("startend:end_phrase", "Boil water... and enjoy your tea.  \n", end_phrase="Enjoy your tea.")
    assert not check("startend:end_phrase", "and enjoy your tea!", end_phrase="enjoy your tea.")
    assert check("startend:start_phrase", "  dear sam, hello", start_phrase="Dear Sam")
    assert not check("startend:start_phrase", "Hi, Dear Sam", start_phrase="Dear Sam")
    assert check("content:placeholders", "[name] at [address]", num_placeholders=2)
    assert not check("content:placeholders", "[name] at [address]", num_placeholders=3)
    assert check("content:postscript", "Text\nP.S. see you", postscript_marker="P.S.")
    assert check("content:postscript", "Text\np. s. see you", postscript_marker="P.S.")
    assert not check("content:postscript", "Text\nPS see you", postscript_marker="P.S.")
    assert check("content:postscript", "Text\nP.P.S more", postscript_marker="P.P.S")


def test_every_registered_type_has_a_description():
    assert all(spec.description for spec in INSTRUCTION_TYPES.values())


@pytest.mark.parametrize("type_id, kwargs, message", [
    ("length:word", {}, "unknown instruction type"),
    ("length:words", {"relation": "at least"}, "missing kwarg 'num_words'"),
    ("length:words", {"relation": "around", "num_words": 5}, "relation must be one of"),
    ("length:words", {"relation": "at least", "num_words": True}, "non-negative integer"),
    ("length:words", {"relation": "at least", "num_words": 5, "extra": 1}, "unexpected kwarg 'extra'"),
    ("keywords:include", {"keywords": "water"}, "non-empty list"),
    ("keywords:letter_frequency", {"letter": "ab", "relation": "at least", "let_frequency": 2}, "single letter"),
    ("length:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "A"},
     "outside 1..2"),
    ("length:words_range", {"min_words": 10, "max_words": 5}, "exceeds max_words"),
])
def test_validate_kwargs_rejects_bad_instructions(type_id, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_kwargs(type_id, kwargs)


# ------------------------------------------------------------------------------------------ strict/loose


def test_loose_variants_are_ifevals_eight():
    assert loose_variants("Sure!\n**hi** there\nBye") == [
        "Sure!\n**hi** there\nBye",
        "Sure!\nhi there\nBye",
        "**hi** there\nBye",
        "Sure!\n**hi** there",
        "**hi** there",
        "hi there\nBye",
        "Sure!\nhi there",
        "hi there",
    ]


def test_loose_forgives_a_preamble_line_and_markdown_stars():
    lowercase = Instruction("case:lowercase", {})
    response = "Sure! Here it is:\nall of this is lowercase."
    assert not instruction_passes(lowercase, response, "strict")
    assert instruction_passes(lowercase, response, "loose")  # first line removed
    end = Instruction("startend:end_phrase", {"end_phrase": "enjoy your tea"})
    assert not instruction_passes(end, "Boil water and **enjoy your tea**", "strict")
    assert instruction_passes(end, "Boil water and **enjoy your tea**", "loose")  # stars removed
    trailer = "Boil water and enjoy your tea\nHope this helps!"
    assert instruction_passes(end, trailer, "loose") and not instruction_passes(end, trailer, "strict")


def test_blank_or_missing_response_fails_everything():
    # "no comma" and "forbidden word" would accept an empty string; IFEval requires a non-blank response
    prompt = make_prompt("p", [("punctuation:no_comma", {}), ("keywords:forbidden", {"forbidden_words": ["x"]})])
    for response in ("", "   \n ", None):
        score = score_response(prompt, response)
        assert score.strict_per_instruction == [False, False]
        assert score.loose_per_instruction == [False, False]


# ------------------------------------------------------------------------------------------ aggregation


@pytest.fixture
def three_prompt_example():
    prompts = [
        make_prompt("p1", [("keywords:include", {"keywords": ["water"]}),
                           ("length:words", {"relation": "at least", "num_words": 5})], category="a"),
        make_prompt("p2", [("case:lowercase", {}), ("startend:end_phrase", {"end_phrase": "bye"})], category="b"),
        make_prompt("p3", [("punctuation:no_comma", {}),
                           ("length:sentences", {"relation": "at least", "num_sentences": 3}),
                           ("format:bullets", {"relation": "exactly", "num_bullets": 2})], category="b"),
    ]
    responses = [
        "Water is wet and cold.",  # 5 words, has "water": strict [T, T], loose [T, T]
        "Hello!\nthis is all lowercase. bye",  # capital H: strict [F, T]; first line removed: loose [T, T]
        "One, two. Three.",  # comma, 2 sentences, 0 bullets: strict [F, F, F], loose [F, F, F]
    ]
    return prompts, responses


def test_score_suite_hand_computed(three_prompt_example):
    prompts, responses = three_prompt_example
    suite = score_suite(prompts, responses)
    assert [r.strict_per_instruction for r in suite.records] == [[True, True], [False, True], [False] * 3]
    assert [r.loose_per_instruction for r in suite.records] == [[True, True], [True, True], [False] * 3]
    assert suite.prompt_values("strict") == [1, 0, 0]
    assert suite.prompt_values("loose") == [1, 1, 0]
    assert suite.prompt_strict == pytest.approx(1 / 3)
    assert suite.prompt_loose == pytest.approx(2 / 3)
    assert suite.instruction_strict == pytest.approx(3 / 7)  # (2 + 1 + 0) of 7
    assert suite.instruction_loose == pytest.approx(4 / 7)  # (2 + 2 + 0) of 7
    assert suite.n_prompts == 3 and suite.n_instructions == 7
    by_type = suite.by_instruction_type()
    assert by_type["case:lowercase"] == {"n": 1, "strict": 0.0, "loose": 1.0}
    assert by_type["keywords:include"] == {"n": 1, "strict": 1.0, "loose": 1.0}


def test_score_suite_accepts_mapping_and_names_missing_ids(three_prompt_example):
    prompts, responses = three_prompt_example
    by_id = {p.id: r for p, r in zip(prompts, responses)}
    assert score_suite(prompts, by_id).prompt_values("loose") == [1, 1, 0]
    with pytest.raises(ValueError, match="p3"):
        score_suite(prompts, {"p1": "x", "p2": "y"})
    with pytest.raises(ValueError, match="2 responses for 3 prompts"):
        score_suite(prompts, responses[:2])


def test_confidence_intervals_and_result_rows(three_prompt_example):
    prompts, responses = three_prompt_example
    suite = score_suite(prompts, responses)
    cis = suite.confidence_intervals(n_boot=500, seed=1)
    for metric, expected in [("prompt_strict_acc", 1 / 3), ("prompt_loose_acc", 2 / 3),
                             ("instruction_strict_acc", 3 / 7), ("instruction_loose_acc", 4 / 7)]:
        value, lo, hi = cis[metric]
        assert value == pytest.approx(expected)
        assert 0.0 <= lo <= value <= hi <= 1.0
        assert lo < hi  # three prompts that differ: resampling must vary
    rows = suite.result_rows(notebook="nb", model="m", n_boot=200)
    assert {r.metric for r in rows} == set(cis)
    assert all(r.benchmark == "textsuite" and r.n == 3 and "sha256" in r.protocol for r in rows)
    # all prompts pass: every resample is 1, so the interval collapses
    perfect = SuiteScore(records=[score_response(prompts[0], responses[0])] * 4)
    assert perfect.confidence_intervals(n_boot=100)["prompt_strict_acc"] == (1.0, 1.0, 1.0)


def test_empty_suite_metrics_are_nan():
    assert math.isnan(SuiteScore().prompt_strict)
    assert math.isnan(SuiteScore().confidence_intervals()["instruction_loose_acc"][0])


# ---------------------------------------------------------------------------------------- the prompt file

NUMBER_WORDS = {"once": 1, "twice": 2, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "first": 1, "second": 2, "third": 3}
STRING_KWARGS = ("keyword", "end_phrase", "start_phrase", "section_splitter", "first_word", "prompt_to_repeat",
                 "postscript_marker", "letter")
LIST_KWARGS = ("keywords", "forbidden_words", "options")


def test_suite_loads_with_enough_valid_heldout_prompts():
    heldout, dev, everything = load_text_suite("heldout"), load_text_suite("dev"), load_text_suite("all")
    assert len(heldout) >= 110 and 1 <= len(dev) < 20
    assert len(everything) == len(heldout) + len(dev)
    ids = [p.id for p in everything]
    assert len(set(ids)) == len(ids)
    assert {p.split for p in heldout} == {"heldout"} and {p.split for p in dev} == {"dev"}
    assert len({p.prompt for p in everything}) == len(everything)  # no prompt text twice
    for p in everything:
        assert 1 <= len(p.instructions) <= 3, p.id
        assert 4 <= len(p.topic_keywords) <= 8, p.id
        for inst in p.instructions:
            assert inst.type in INSTRUCTION_TYPES, (p.id, inst.type)
            validate_kwargs(inst.type, dict(inst.kwargs))
    with pytest.raises(ValueError, match="split must be"):
        load_text_suite("test")


def test_suite_mixes_categories_difficulties_and_every_type():
    heldout = load_text_suite("heldout")
    assert len({p.category for p in heldout}) >= 8
    for level in ("easy", "medium", "hard"):
        assert sum(p.difficulty == level for p in heldout) >= 20, level
    used = {i.type for p in heldout for i in p.instructions}
    assert used == set(INSTRUCTION_TYPES)


def test_every_kwarg_is_stated_in_its_prompt():
    """The prompt text must ask for what the checker checks: phrases verbatim, numbers as digits or words."""
    for p in load_text_suite("all"):
        text = p.prompt.lower()
        numbers = {int(d) for d in re.findall(r"\d+", text)}
        numbers |= {n for w, n in NUMBER_WORDS.items() if re.search(rf"\b{w}\b", text)}
        for inst in p.instructions:
            for name, value in inst.kwargs.items():
                if name in STRING_KWARGS:
                    assert value.lower() in text, (p.id, name, value)
                elif name in LIST_KWARGS:
                    assert all(v.lower() in text for v in value), (p.id, name, value)
                elif name != "relation":
                    assert value in numbers, (p.id, name, value)


def test_parse_prompts_names_line_and_problem():
    good = ('{"id": "x", "split": "heldout", "category": "c", "difficulty": "easy", "prompt": "p", '
            '"instructions": [{"type": "case:lowercase", "kwargs": {}}], "topic_keywords": ["a", "b", "c", "d"]}')
    assert len(parse_prompts(good)) == 1
    with pytest.raises(ValueError, match=r"f\.jsonl:2 .*duplicate id"):
        parse_prompts(good + "\n" + good, source="f.jsonl")
    bad_type = good.replace("case:lowercase", "case:lower")
    with pytest.raises(ValueError, match=r":1 .*unknown instruction type 'case:lower'"):
        parse_prompts(bad_type)
    with pytest.raises(ValueError, match="topic_keywords"):
        parse_prompts(good.replace('["a", "b", "c", "d"]', '["a"]'))


# ------------------------------------------------------------------- reference answers written by hand

REFERENCE_ANSWERS = {
    "ts-h004": (
        "vaccines train the immune system before a real infection happens. a vaccine shows the body a harmless "
        "piece or a weakened form of a virus, and the body answers by making antibodies. if the real disease "
        "arrives later, the immune system remembers it and can protect you quickly."
    ),
    "ts-h007": (
        "A moving bicycle stays upright mostly because the rider keeps steering the wheels back under the center "
        "of mass. When the bike starts to lean to one side the rider turns the front wheel slightly toward that "
        "side and the wheels roll back under the body. The shape of the front fork also helps because the front "
        "wheel tends to turn into a lean by itself. At higher speed these small corrections work faster so "
        "balance feels easy."
    ),
    "ts-h010": (
        "Section 1\nYour message is cut into small packets of data. Each packet carries the address of the "
        "computer it is going to.\n\nSection 2\nThe packets travel across the network through many routers. Each "
        "router reads the address and sends the packet one step closer.\n\nSection 3\nThe receiving computer "
        "collects the packets and puts them back in order, so the full message appears on the screen."
    ),
    "ts-h012": (
        "Bees fly from flower to flower and collect nectar. They carry it back to the hive in a special stomach. "
        "Worker bees pass the nectar to each other and add enzymes to it. They spread it in wax cells and fan it "
        "with their wings until most of the water evaporates. Then they seal the cells with wax, and the honey is "
        "ready."
    ),
    "ts-h014": (
        "Dear [landlord's name],\n\nI am writing to report that the kitchen tap in my apartment at [address] has "
        "been leaking since [date]. Water drips constantly, even when the tap is fully closed. Could you please "
        "arrange a repair soon?\n\nBest regards,\n[your name]"
    ),
    "ts-h015": (
        "Hi neighbours,\n\nWe are having a small garden party this Saturday from 3 pm, and we would love you to "
        "join us. There will be food, drinks and music.\n\nBest wishes,\nAnna and Tom\n\nP.S. Feel free to bring "
        "your children."
    ),
    "ts-h017": (
        "DEAR CUSTOMER,\n\nWE ARE VERY SORRY THAT YOUR ORDER ARRIVED LATE. THE DELIVERY WAS HELD UP AT OUR "
        "WAREHOUSE, AND WE APOLOGIZE FOR THE TROUBLE. WE HAVE ADDED A DISCOUNT TO YOUR NEXT ORDER.\n\nBEST "
        "WISHES,\nTHE SUPPORT TEAM"
    ),
    "ts-h020": (
        '"Dear hotel team,\n\nI would like to know whether you have a double room free for two nights, from 14 to '
        '16 June. Please tell me the price and how I can book it.\n\nKind regards,\nJana"'
    ),
    "ts-h023": (
        "Dear Clara and Ben\n\nThank you so much for the kind invitation to your wedding. I am sorry to say that I "
        "cannot attend because I will be abroad for work that week. I wish you both a wonderful day and a very "
        "happy life together.\n\nWith love\nMarta\n\nP.S. I will send a small gift to your new home."
    ),
    "ts-h028": (
        "Mia and Leo followed a narrow path into the forest to look for mushrooms.\n\n***\n\nAfter an hour the "
        "trees all looked the same, and they realised they were lost.\n\n***\n\nThey followed a stream downhill "
        "until they saw the road, and they walked home tired but happy."
    ),
    "ts-h031": (
        "Once there was a small grey cat named Pip who watched the birds every day and wished she had wings.\n\n"
        "One morning she jumped from the garden wall, landed softly in the grass, and decided that climbing trees "
        "was almost as good as flying."
    ),
    "ts-h033": (
        "Someone stole the famous painting from the city museum on a quiet Sunday night. Detective Rosa found a "
        "clue on the floor: a small paint brush with blue paint on it. The only painter in the museum that night "
        "was the guard who loved to copy old pictures. Rosa found the painting hidden in his locker. The case was "
        "closed."
    ),
    "ts-h043": (  # m: Mountains, morning, mist, summits (2), meet, climb, mighty, moon = 9
        "Mountains rise above the morning mist\nTheir summits meet the sky\nI climb the mighty peaks at dawn\n"
        "And watch the moon go by"
    ),
    "ts-h049": (
        '{"reasons": ["You can talk with more people when you travel.", "It helps you understand another '
        'culture.", "It can open new jobs and keeps the brain active."]}'
    ),
    "ts-h052": (
        "* THE TELEPHONE: ALEXANDER GRAHAM BELL\n* THE LIGHT BULB: THOMAS EDISON\n* THE PRINTING PRESS: JOHANNES "
        "GUTENBERG\n* THE AIRPLANE: THE WRIGHT BROTHERS"
    ),
    "ts-h055": (
        "1. Ticket to Ride: players collect cards to build train routes.\n2. Carcassonne: a tile game the whole "
        "family learns fast.\n3. Uno: a quick card game.\n******\n1. Monopoly: buy streets and collect rent.\n"
        "2. Scrabble: build words on the board.\n3. Dixit: guess the story behind picture cards."
    ),
    "ts-h060": (
        "1. Take everything out of the garage and put it on the driveway.\n2. Sort the items into keep, donate and "
        "trash piles.\n3. Sweep the floor and wipe the shelves.\n4. Put the things you keep back in labelled "
        "boxes.\n5. Take the trash and donations away the same day.\nGood luck!"
    ),
    "ts-h062": (
        "Here is my plan to read more books this year. I will read for twenty minutes every evening before bed. I "
        "will keep a book in my bag for the bus. Each month I will visit the library and pick two new titles. At "
        "the end of the year I will count how many I finished."
    ),
    "ts-h075": (  # 7 + 13 + 11 + 16 = 47 words
        "Summarize the key facts of this passage. A night train now runs three times a week between Arlo and Venn. "
        "The trip takes eleven hours, with seats or small sleeping cabins. The company hopes people who fly will "
        "take the train, which emits much less carbon dioxide."
    ),
    "ts-h086": (  # BUDGET, SAVE, WAIT, BANK, WEEK; 70 words
        "Money is easier to manage when you have a plan. First, make a simple BUDGET that lists what you earn and "
        "what you spend. Always SAVE a small part of every payment, even if it is only a little. Avoid buying "
        "things on impulse; WAIT a day before you decide. Keep your savings in a BANK account so you are not "
        "tempted to spend them. Check your spending every WEEK and set clear goals."
    ),
    "ts-h101": (
        "boil fresh water in a kettle. put a tea bag in a cup and pour the hot water over it. let it steep for "
        "three to five minutes, then take out the bag. add milk or sugar if you like, and enjoy your tea"
    ),
    "ts-h105": (
        "Tell me how to write a haiku. A haiku is a short poem of three lines. The first line has five syllables, "
        "the second has seven, and the third has five again. Pick one moment from nature, describe it simply, and "
        "count the syllables as you write."
    ),
    "ts-h112": (
        "Dark clouds gathered over the hills, and the air grew heavy and still.\n\nSuddenly a flash of lightning "
        "split the sky, and thunder rolled across the valley.\n\nThen the rain came down hard, and the wind bent "
        "the trees until the storm finally passed."
    ),
    "ts-h115": (
        "My answer is yes. Swimming soon after a normal meal is generally safe; the old warning about dangerous "
        "cramps is not backed by evidence. If you ate a very large meal, you may feel more comfortable waiting a "
        "little while."
    ),
    "ts-h116": (  # 16 + 10 + 23 + 17 = 66 words
        "A pet rabbit needs fresh hay every day, because hay keeps its teeth and stomach healthy. Give it clean "
        "water and a handful of leafy vegetables. Its cage or pen should be large enough to hop around in, and it "
        "needs time outside the cage every day to exercise. Clean the cage and litter box often, and handle your "
        "rabbit gently so it learns to trust you."
    ),
}


@pytest.mark.parametrize("prompt_id", sorted(REFERENCE_ANSWERS))
def test_hand_written_reference_answer_passes_strict(prompt_id):
    prompt = {p.id: p for p in load_text_suite("heldout")}[prompt_id]
    score = score_response(prompt, REFERENCE_ANSWERS[prompt_id])
    failed = [t for t, ok in zip(score.instruction_types, score.strict_per_instruction) if not ok]
    assert not failed, f"{prompt_id}: {failed}"
    assert score.loose  # loose never rejects what strict accepts
    assert topic_coverage(prompt, REFERENCE_ANSWERS[prompt_id]) > 0  # on topic by the keyword proxy


def test_reference_answers_cover_the_hard_types():
    heldout = {p.id: p for p in load_text_suite("heldout")}
    covered = {i.type for pid in REFERENCE_ANSWERS for i in heldout[pid].instructions}
    assert len(REFERENCE_ANSWERS) >= 15
    for hard in ("case:lowercase", "case:uppercase", "punctuation:no_comma", "format:json", "format:sections",
                 "format:two_responses", "format:repeat_prompt", "length:paragraphs", "format:quotation",
                 "length:nth_paragraph_first_word", "keywords:letter_frequency", "case:capital_word_frequency"):
        assert hard in covered, hard


# ------------------------------------------------------------------------------------------ diagnostics


def test_repetition_stats_hand_computed():
    # 12 words; 9 four-grams of which 6 distinct; 5 distinct words; 11 bigrams of which 6 distinct;
    # the 6-word unit "the cat sat on the mat" appears twice in a row: run of 12 words
    stats = repetition_stats("The cat sat on the mat. The cat sat on the mat.")
    assert stats["repeated_4gram_share"] == pytest.approx(1 - 6 / 9)
    assert stats["distinct_1"] == pytest.approx(5 / 12)
    assert stats["distinct_2"] == pytest.approx(6 / 11)
    assert stats["longest_repeated_run"] == 12
    fresh = repetition_stats("hello world")
    assert fresh == {"repeated_4gram_share": 0.0, "distinct_1": 1.0, "distinct_2": 1.0, "longest_repeated_run": 0}
    assert repetition_stats("a b a b a")["longest_repeated_run"] == 5
    assert repetition_stats("no no no no")["longest_repeated_run"] == 4
    empty = repetition_stats("")
    assert math.isnan(empty["distinct_1"]) and empty["longest_repeated_run"] == 0


def test_topic_coverage_is_stem_insensitive():
    prompt = make_prompt("p", [("case:lowercase", {})], keywords=("water", "plants", "sunlight", "soil"))
    # watering ~ water, plant ~ plants; "sun" is not "sunlight", no soil: 2 of 4
    assert topic_coverage(prompt, "Watering the plant and giving it sun.") == pytest.approx(0.5)
    assert topic_coverage(prompt, "") == 0.0
    assert topic_coverage(prompt, None) == 0.0


class _SplitTokenizer:
    def encode(self, text):  # no add_special_tokens keyword: the fallback path
        return text.split()


class _CharTokenizer:
    def encode(self, text, add_special_tokens=True):
        return list(text) + (["<s>"] if add_special_tokens else [])


def test_length_stats_and_empty_rate():
    responses = ["one two three", "", "four five"]  # words 3, 0, 2; chars 13, 0, 9
    stats = length_stats(responses)
    assert stats["n"] == 3
    assert stats["mean_words"] == pytest.approx(5 / 3) and stats["median_words"] == 2
    assert stats["mean_chars"] == pytest.approx(22 / 3) and stats["median_chars"] == 9
    assert math.isnan(stats["mean_tokens"])
    assert stats["empty_rate"] == pytest.approx(1 / 3)
    assert length_stats(responses, tokenizer=_SplitTokenizer())["mean_tokens"] == pytest.approx(5 / 3)
    # special tokens are not counted: 13, 0, 9 characters
    assert length_stats(responses, tokenizer=_CharTokenizer())["mean_tokens"] == pytest.approx(22 / 3)
    assert empty_answer_rate(["", "  ", None, "ok", "***"]) == pytest.approx(4 / 5)


def test_per_prompt_table(three_prompt_example):
    prompts, responses = three_prompt_example
    table = per_prompt_table(prompts, responses, tokenizer=_SplitTokenizer())
    assert list(table["id"]) == ["p1", "p2", "p3"]
    assert list(table["strict"]) == [1, 0, 0] and list(table["loose"]) == [1, 1, 0]
    assert list(table["instr_strict"]) == pytest.approx([1.0, 0.5, 0.0])
    assert list(table["n_words"]) == [5, 6, 3]  # Hello this is all lowercase bye = 6
    assert list(table["n_sentences"]) == [1, 3, 2]  # "Hello!" | "this is all lowercase." | "bye"
    assert list(table["empty"]) == [0, 0, 0]
    for column in ("category", "difficulty", "coverage", "repeated_4gram_share", "distinct_1", "distinct_2",
                   "longest_repeated_run", "n_chars", "n_tokens"):
        assert column in table.columns
    assert table["strict"].mean() == pytest.approx(1 / 3)  # prompt-level strict accuracy from the table
