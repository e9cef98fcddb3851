"""Tokeniser, sentence splitter, noun lemmatiser and POS tagger plumbing shared by AMBER and CHAIR.

The official scorers call `nltk.word_tokenize` (needs the `punkt_tab` model), `nltk.pos_tag` (needs
`averaged_perceptron_tagger_eng`) and NLTK's WordNet lemmatiser (needs the WordNet corpus). None of these can be
downloaded here, so every piece is pluggable and the toolkit records which implementation ran:

- tokeniser: official `nltk.word_tokenize` (punkt sentences + Treebank words); fallback a regex sentence split
  and regex words (Treebank-like: "n't" and clitics split off, punctuation apart).
- lemmatiser: official `WordNetLemmatizer().lemmatize(word)` (noun); fallback `RuleLemmatizer`, WordNet's noun
  suffix rules plus a small irregular-plural table.
- POS tagger: official `nltk.pos_tag`; fallback none, and the caller looks words up in its own vocabulary
  (AMBER: relation.json).

WordNet data can come from the Debian packages `wordnet-base` + `wordnet-sense-index`
(`apt-get install wordnet-base wordnet-sense-index`): `prepare_wordnet_from_debian` turns /usr/share/wordnet into
the `corpora/wordnet` folder NLTK expects (NLTK refuses symlinks that leave its data root, so the files are
copied, about 36 MB, and the missing `lexnames` file is written from the WordNet 3.0 list below).
`get_toolkit("auto")` does this once, into the mmalign cache, when NLTK is installed and the Debian files exist.
"""
from __future__ import annotations

import functools
import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Tokenizer = Callable[[str], list[str]]
Lemmatizer = Callable[[str], str]
PosTagger = Callable[[list[str]], list[tuple[str, str]]]
Similarity = Callable[[str, str], float]

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

# WordNet 3.0 lexicographer files (lexnames(5WN)): number = position; category 1 noun, 2 verb, 3 adj, 4 adv.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
_LEXNAME_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


# --------------------------------------------------------------------------------------------------- tokenising

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")


def regex_sentences(text: str) -> list[str]:
    """Split after . ! ? followed by whitespace, and at newlines. Punkt would not split after abbreviations
    ("Mr.", "e.g."); for object mentions that difference does not matter."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s and s.strip()]


_CONTRACTION_NT = re.compile(r"(?i)(\w)(n't)\b")
_CONTRACTION_CLITIC = re.compile(r"(?i)(\w)('(?:s|re|ve|ll|d|m))\b")
_WORD_OR_PUNCT = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\w+(?:[-.'&]\w+)*|\.\.\.|[^\w\s]", re.IGNORECASE)


def regex_word_tokenize(text: str) -> list[str]:
    """A small stand-in for the Treebank tokeniser (used whenever punkt is missing): words (with inner hyphens,
    apostrophes and dots kept), "n't" and clitics split off, punctuation as separate tokens."""
    tokens: list[str] = []
    for sentence in regex_sentences(text):
        sentence = _CONTRACTION_NT.sub(r"\1 \2", sentence)
        sentence = _CONTRACTION_CLITIC.sub(r"\1 \2", sentence)
        tokens.extend(_WORD_OR_PUNCT.findall(sentence))
    return tokens


# --------------------------------------------------------------------------------------------------- lemmatising

class RuleLemmatizer:
    """Noun lemmas by WordNet's morphological suffix rules, without WordNet's dictionary (approximate).

    WordNet's `morphy` tries the exception list, then the suffix substitutions (s->, ses->s, xes->x, zes->z,
    ches->ch, shes->sh, men->man, ies->y) and keeps the candidates that are WordNet nouns (the shortest wins in
    NLTK). Without the dictionary we pick one candidate by ending and keep a small table of irregular plurals and
    of words WordNet leaves alone. Like WordNet, words with capitals are returned unchanged. Regular plurals of
    everyday objects (dogs, benches, glasses, puppies) come out as WordNet's; rarer words may differ.
    """

    name = "rules"

    IRREGULAR = {
        "children": "child", "women": "woman", "mice": "mouse", "geese": "goose", "feet": "foot", "oxen": "ox",
        "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "shelves": "shelf", "loaves": "loaf",
        "halves": "half", "wolves": "wolf", "calves": "calf", "scarves": "scarf", "thieves": "thief",
        "elves": "elf", "hooves": "hoof", "dice": "die", "buses": "bus", "gases": "gas", "lenses": "lens",
        "movies": "movie", "cookies": "cooky", "brownies": "brownie", "zombies": "zombie", "quizzes": "quiz",
        "cacti": "cactus", "fungi": "fungus", "people": "people", "men": "men", "teeth": "teeth",
        "sheep": "sheep", "deer": "deer", "fish": "fish", "series": "series", "species": "specie",
        "scissors": "scissors", "clothes": "clothes", "pants": "pant", "jeans": "jean", "shorts": "short",
        "glasses": "glass", "sunglasses": "sunglass", "avalanches": "avalanche", "niches": "niche",
        "mustaches": "mustache", "moustaches": "moustache", "headphones": "headphone", "news": "news",
        "skis": "ski", "lens": "lens",
        "vases": "vas",  # WordNet's answer too ("vas" is a noun there), so official CHAIR misses plural vases
    }
    _KEEP_ENDINGS = ("ss", "us", "is", "ous")

    def __call__(self, word: str) -> str:
        return self.lemmatize(word)

    def lemmatize(self, word: str) -> str:
        if word in self.IRREGULAR:
            return self.IRREGULAR[word]
        if not re.fullmatch(r"[a-z]+(?:-[a-z]+)*", word) or len(word) <= 2:
            return word
        if word.endswith(self._KEEP_ENDINGS):
            return word
        if word.endswith("men") and len(word) > 4 and not word.endswith(("specimen", "abdomen", "stamen", "regimen")):
            return word[:-3] + "man"  # firemen -> fireman, policemen -> policeman
        if word.endswith("ies") and len(word) > 4:
            return word[:-3] + "y"
        if word.endswith(("sses", "shes", "ches", "xes")):
            return word[:-2]
        if word.endswith("s"):
            return word[:-1]
        return word


def prepare_wordnet_from_debian(target_root: str | Path, source: str | Path = DEBIAN_WORDNET_DIR) -> Path:
    """Build `<target_root>/corpora/wordnet` from Debian's WordNet files; returns target_root (an NLTK data dir).

    Needs `apt-get install wordnet-base wordnet-sense-index`. Idempotent: files already copied are kept.
    """
    source, target_root = Path(source), Path(target_root)
    if not (source / "data.noun").exists():
        raise FileNotFoundError(
            f"no WordNet database under {source}; install the Debian packages wordnet-base and "
            "wordnet-sense-index (apt-get install wordnet-base wordnet-sense-index), or put NLTK's own "
            "corpora/wordnet folder under a directory listed in NLTK_DATA")
    target = target_root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and not (target / path.name).exists():
            shutil.copyfile(path, target / path.name)  # copies: NLTK rejects links that leave its data root
    lexnames = target / "lexnames"
    if not lexnames.exists():
        lines = [f"{i:02d}\t{name}\t{_LEXNAME_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(_LEXNAMES)]
        lexnames.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target_root


def _nltk_importable() -> bool:
    # find_spec, not import: importing nltk pulls in scipy and takes seconds
    return importlib.util.find_spec("nltk") is not None


def nltk_resource_available(resource: str) -> bool:
    """True when NLTK is installed and `nltk.data.find(resource)` succeeds (e.g. 'tokenizers/punkt_tab/english/')."""
    if not _nltk_importable():
        return False
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


def wordnet_lemmatizer(nltk_data_dir: str | Path | None = None) -> Lemmatizer | None:
    """NLTK's WordNet lemmatiser (noun), or None when NLTK or the WordNet data is missing."""
    if not _nltk_importable():
        return None
    import nltk

    if nltk_data_dir is not None and str(nltk_data_dir) not in nltk.data.path:
        nltk.data.path.append(str(nltk_data_dir))
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()
    try:
        lemmatizer.lemmatize("dogs")  # loads the corpus; raises if it is absent or incomplete
    except (LookupError, OSError, ValueError):
        return None
    return lemmatizer.lemmatize


def _auto_wordnet() -> Lemmatizer | None:
    found = wordnet_lemmatizer()
    if found is not None or not _nltk_importable() or not (DEBIAN_WORDNET_DIR / "data.noun").exists():
        return found
    from mmalign_utils.config import cache_dir

    target = cache_dir() / "nltk_data"
    prepare_wordnet_from_debian(target)
    return wordnet_lemmatizer(target)


# --------------------------------------------------------------------------------------------------- the toolkit

@dataclass
class NLPToolkit:
    """The pieces a scorer uses, with their names. Build your own to plug in other implementations."""

    tokenize: Tokenizer
    lemmatize: Lemmatizer
    pos_tag: PosTagger | None = None
    tokenizer_name: str = "custom"
    lemmatizer_name: str = "custom"
    tagger_name: str = "none (vocabulary lookup)"
    official_parts: frozenset[str] = field(default_factory=frozenset)  # which of tokenizer/lemmatizer/tagger

    def fidelity(self, needs_tagger: bool = False) -> str:
        """'official' when every piece the scorer uses is the one the original script used."""
        needed = {"tokenizer", "lemmatizer"} | ({"tagger"} if needs_tagger else set())
        return "official" if needed <= self.official_parts else "approximate"

    def describe(self, needs_tagger: bool = False) -> dict:
        info = {"tokenizer": self.tokenizer_name, "lemmatizer": self.lemmatizer_name,
                "fidelity": self.fidelity(needs_tagger)}
        if needs_tagger:
            info["pos_tagger"] = self.tagger_name
        return info


def approximate_toolkit(lemmatize: Lemmatizer | None = None) -> NLPToolkit:
    """The fallback toolkit: regex sentences + regex words, rule lemmatiser (or the one given), no tagger.

    It needs no NLTK at all, so it behaves the same on every machine.
    """
    lem = lemmatize or RuleLemmatizer()
    lem_name = getattr(lem, "name", "custom") if lemmatize else "rules (approximate)"
    return NLPToolkit(tokenize=regex_word_tokenize, lemmatize=lem,
                      tokenizer_name="regex sentences + regex words (approximate)", lemmatizer_name=lem_name)


@functools.lru_cache(maxsize=4)
def get_toolkit(mode: str = "auto") -> NLPToolkit:
    """'auto': the official piece wherever its data is present, else the fallback; 'approximate': always the
    fallbacks; 'official': the official pieces or a RuntimeError naming what is missing."""
    if mode not in ("auto", "official", "approximate"):
        raise ValueError(f"unknown NLP mode {mode!r}; use 'auto', 'official' or 'approximate'")
    toolkit = approximate_toolkit()
    if mode == "approximate":
        return toolkit
    official: set[str] = set()
    missing: list[str] = []
    if nltk_resource_available("tokenizers/punkt_tab/english/"):
        import nltk

        toolkit.tokenize, toolkit.tokenizer_name = nltk.word_tokenize, "nltk.word_tokenize"
        official.add("tokenizer")
    else:
        missing.append("NLTK punkt_tab (tokenizers/punkt_tab) for nltk.word_tokenize")
    wordnet = _auto_wordnet()
    if wordnet is not None:
        toolkit.lemmatize, toolkit.lemmatizer_name = wordnet, "wordnet"
        official.add("lemmatizer")
    else:
        missing.append("WordNet (apt-get install wordnet-base wordnet-sense-index, or NLTK's corpora/wordnet)")
    if nltk_resource_available("taggers/averaged_perceptron_tagger_eng/"):
        import nltk

        toolkit.pos_tag, toolkit.tagger_name = nltk.pos_tag, "nltk.pos_tag"
        official.add("tagger")
    else:
        missing.append("NLTK averaged_perceptron_tagger_eng (taggers/...) for nltk.pos_tag")
    toolkit.official_parts = frozenset(official)
    if mode == "official" and missing:
        raise RuntimeError("the official NLP pieces are not all available (nltk installed: "
                           f"{_nltk_importable()}); missing: " + "; ".join(missing)
                           + ". Put the NLTK data under a directory in NLTK_DATA, or use mode='auto'.")
    return toolkit


# --------------------------------------------------------------------------------------------------- similarity

def spacy_similarity(model: str = "en_core_web_lg") -> Similarity:
    """Word similarity from a user-installed spaCy model (AMBER's official choice is en_core_web_lg).

    spaCy models are not on PyPI from Explosion; install one you trust and pass its name. A different model than
    en_core_web_lg makes AMBER's numbers non-official.
    """
    try:
        import spacy
    except ImportError:
        raise RuntimeError("spaCy is not installed; pip install spacy and a model, or leave similarity off") from None
    try:
        nlp = spacy.load(model)
    except OSError as e:
        raise RuntimeError(f"spaCy model {model!r} is not installed ({e}); install it or leave similarity "
                           "off") from None

    @functools.lru_cache(maxsize=65536)
    def doc(word: str):
        return nlp(word)

    def similarity(word1: str, word2: str) -> float:
        return float(doc(word1).similarity(doc(word2)))

    similarity.name = f"spacy:{model}"  # type: ignore[attr-defined]
    return similarity


def similarity_name(similarity: Similarity | None) -> str | None:
    if similarity is None:
        return None
    return getattr(similarity, "name", getattr(similarity, "__name__", "custom"))
