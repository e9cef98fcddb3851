"""The long-form writer's checks and bookkeeping, with a scripted writer in place of the LLM."""
import json

from mmalign_utils.train import longform
from mmalign_utils.train.longform import check_sentence, fact_words, write_longform
from mmalign_utils.world.scenes import Scene, SceneObject

SCENE = Scene([SceneObject("circle", "red", "large", 0, 0), SceneObject("star", "blue", "small", 1, 1)], seed=0)


def test_fact_words_ignore_wording_but_not_facts():
    plain = "A large red circle is in the top left corner."
    assert fact_words(plain) == fact_words("In the upper left corner you can see a big red disc.")
    assert fact_words(plain) != fact_words("A large red circle is in the top right corner.")
    assert fact_words("There are two stars.") == fact_words("The picture holds 2 stars.")


def test_check_sentence_reasons():
    plain = "A small blue star is in the center."
    assert check_sentence("In the center there is a little blue star.", plain, SCENE, "shapes") == ""
    assert check_sentence("A small blue star is in the center.", plain, SCENE, "shapes") == "copied"
    assert check_sentence("A small green star is in the center.", plain, SCENE, "shapes") == "changed facts"
    assert check_sentence("As an AI I see a small blue star in the center.", plain, SCENE, "shapes") == "meta talk"
    assert check_sentence("Star.", plain, SCENE, "shapes") == "length"
    # Same fact words as the plain sentence, yet false in this scene: the grounding checker catches it.
    wrong_plain = "A small blue star is in the top left corner."
    assert check_sentence("In the top left corner sits a small blue star.", wrong_plain, SCENE, "shapes") \
        == "contradicts the scene"


def test_write_longform_picks_the_first_passing_candidate_and_resumes(tmp_path, monkeypatch):
    calls = []

    def scripted(model, tok, conversations, settings, progress=False):
        calls.append(len(conversations))
        out = []
        for conv in conversations:
            sentence = conv.messages[-1]["content"]
            if "star" in sentence:
                out.append(["A small green star is in the center.", "In the center there is a little blue star."])
            else:
                out.append(["As an AI assistant I cannot see the large red circle there.", "Nothing useful."])
        return out

    monkeypatch.setattr(longform, "generate", scripted)
    plain = "A large red circle is in the top left corner. A small blue star is in the center."
    cache = tmp_path / "cache.jsonl"
    [answer] = write_longform([(plain, SCENE, "shapes")], None, None, cache_path=cache, progress=False)
    assert answer.text == "A large red circle is in the top left corner. In the center there is a little blue star."
    assert (answer.n_sentences, answer.n_natural) == (2, 1)
    assert answer.reasons == ["meta talk"]
    assert len(cache.read_text().splitlines()) == 2
    assert json.loads(cache.read_text().splitlines()[0])["rewrite"]
    # A rerun finds everything in the cache and asks the writer nothing.
    calls.clear()
    [again] = write_longform([(plain, SCENE, "shapes")], None, None, cache_path=cache, progress=False)
    assert again == answer and calls == []
