"""ShapesWorld short-answer scoring, on hand-written predictions."""
from mmalign_utils.vqa import answer_space_size, is_correct, mc_letter, normalize_answer


def test_normalize_answer():
    assert normalize_answer("  The Red.\nmore") == "red"
    assert normalize_answer("Top-left") == "top left"


def test_yes_no_by_first_word():
    assert is_correct("Yes, there is.", "existence", "yes")
    assert not is_correct("No.", "existence", "yes")
    assert not is_correct("I think yes", "existence", "yes")


def test_numbers_accept_words():
    assert is_correct("Two", "count", "2")
    assert is_correct("2 circles", "count", "2")
    assert not is_correct("3", "count", "2")


def test_exact_phrase_and_accepted_alternatives():
    assert is_correct("middle right", "short_vqa", "middle right")
    assert not is_correct("middle", "short_vqa", "middle right")
    assert is_correct("big", "short_vqa", "large", accepted=["large", "big"])


def test_multiple_choice_letters():
    assert mc_letter("B") == "B" and mc_letter("(c) circle") == "C" and mc_letter("B. red") == "B"
    assert mc_letter("Blue") == ""  # a word starting with B is not the letter B
    assert is_correct("B.", "multiple_choice", "yellow", answer_letter="B")
    assert not is_correct("yellow", "multiple_choice", "yellow", answer_letter="B")


def test_chance_levels():
    assert answer_space_size("existence", "no") == 2
    assert answer_space_size("short_vqa", "red") == 6  # six colours
    assert answer_space_size("short_vqa", "star") == 4  # four shapes
    assert answer_space_size("multiple_choice", "x", options=["a", "b", "c", "d"]) == 4
    assert answer_space_size("short_vqa", "top left") == 9  # nine cells
