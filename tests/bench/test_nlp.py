"""NLP plumbing shared by AMBER and CHAIR: the fallback tokeniser and lemmatiser, the WordNet folder built from
Debian's files, and the toolkit's record of which pieces are official."""
import importlib.util

import pytest

from mmalign_utils.bench import nlp


def test_regex_sentences_and_words():
    assert nlp.regex_sentences("A dog sits. A cat runs! Why?\nNew line") == [
        "A dog sits.", "A cat runs!", "Why?", "New line"]
    # Treebank-like: the sentence-final period is its own token, "n't" and clitics split off
    assert nlp.regex_word_tokenize("A man sits on a couch. There isn't a dog, it's a T-shirt.") == [
        "A", "man", "sits", "on", "a", "couch", ".", "There", "is", "n't", "a", "dog", ",", "it", "'s", "a",
        "T-shirt", "."]
    assert nlp.regex_word_tokenize("It costs 3.50 dollars.") == ["It", "costs", "3.50", "dollars", "."]


@pytest.mark.parametrize("word, lemma", [
    ("dogs", "dog"), ("children", "child"), ("mice", "mouse"), ("knives", "knife"), ("glasses", "glass"),
    ("benches", "bench"), ("puppies", "puppy"), ("boxes", "box"), ("buses", "bus"), ("ties", "tie"),
    ("firemen", "fireman"), ("tennis", "tennis"), ("is", "is"), ("table", "table"),
    ("men", "men"), ("people", "people"),  # WordNet keeps these: they are lemmas themselves
    ("Dogs", "Dogs"),  # capitals are left alone, as WordNet's lookup is lower-case
])
def test_rule_lemmatizer(word, lemma):
    assert nlp.RuleLemmatizer()(word) == lemma


COMMON_NOUNS = (
    "dogs cats children mice knives glasses people men women buses houses puppies ties geese feet shelves leaves "
    "skis sheep bus glass tennis boxes dishes benches couches kitten table toilet seat movies trees horses giraffes "
    "zebras oranges umbrellas sunglasses ladies cars bottles cups forks spoons bowls sandwiches donuts cakes chairs "
    "beds laptops phones clocks vases bears birds cows elephants kites bikes motorcycles airplanes trains trucks "
    "boats pizzas bananas apples carrots hats shirts shoes bags flowers plants windows buildings roads kids babies "
    "skateboards surfboards rackets dresses bushes foxes"
).split()


@pytest.mark.slow
def test_rule_lemmatizer_agrees_with_wordnet_on_common_nouns(tmp_path):
    if importlib.util.find_spec("nltk") is None or not (nlp.DEBIAN_WORDNET_DIR / "data.noun").exists():
        pytest.skip("WordNet not available (needs nltk and apt-get install wordnet-base wordnet-sense-index)")
    wordnet = nlp.wordnet_lemmatizer(nlp.prepare_wordnet_from_debian(tmp_path))
    assert wordnet is not None and wordnet("children") == "child"
    rules = nlp.RuleLemmatizer()
    assert [(w, rules(w)) for w in COMMON_NOUNS if rules(w) != wordnet(w)] == []


def test_prepare_wordnet_from_debian_layout(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for name in ("data.noun", "index.noun", "noun.exc"):
        (source / name).write_text(f"stub {name}\n")
    root = nlp.prepare_wordnet_from_debian(tmp_path / "nltk_data", source)
    folder = root / "corpora" / "wordnet"
    assert (folder / "data.noun").read_text() == "stub data.noun\n" and not (folder / "data.noun").is_symlink()
    lexnames = (folder / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45  # WordNet 3.0 has 45 lexicographer files
    assert lexnames[5] == "05\tnoun.animal\t1" and lexnames[29] == "29\tverb.body\t2"
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[2] == "02\tadv.all\t4" and lexnames[44] == "44\tadj.ppl\t3"
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        nlp.prepare_wordnet_from_debian(tmp_path / "other", tmp_path / "nowhere")


def test_toolkit_records_what_ran():
    toolkit = nlp.get_toolkit("approximate")
    assert toolkit.describe(needs_tagger=True) == {
        "tokenizer": "regex sentences + regex words (approximate)", "lemmatizer": "rules (approximate)",
        "fidelity": "approximate", "pos_tagger": "none (vocabulary lookup)"}
    official = nlp.NLPToolkit(tokenize=str.split, lemmatize=str.lower,
                              official_parts=frozenset({"tokenizer", "lemmatizer"}))
    assert official.fidelity() == "official" and official.fidelity(needs_tagger=True) == "approximate"
    stub = nlp.approximate_toolkit(lemmatize=str.lower)
    assert stub.lemmatizer_name == "custom" and stub.lemmatize("Dogs") == "dogs"
    with pytest.raises(ValueError, match="unknown NLP mode"):
        nlp.get_toolkit("strict")


@pytest.mark.slow
def test_official_mode_names_what_is_missing(tmp_path, monkeypatch):
    if nlp.nltk_resource_available("tokenizers/punkt_tab/english/"):
        pytest.skip("punkt_tab is installed here")
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))  # where a Debian WordNet copy would go
    nlp.get_toolkit.cache_clear()
    with pytest.raises(RuntimeError, match="punkt_tab"):
        nlp.get_toolkit("official")


def test_spacy_similarity_needs_spacy():
    if importlib.util.find_spec("spacy") is not None:
        pytest.skip("spaCy is installed here")
    with pytest.raises(RuntimeError, match="spaCy is not installed"):
        nlp.spacy_similarity()
    assert nlp.similarity_name(None) is None
