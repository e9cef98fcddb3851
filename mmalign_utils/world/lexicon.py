"""Word lists of the grounding checker: negators, clause breaks, numbers, position words, and the contexts in
which a shape word does not mean a shape ("square root", "rock star"). Kept apart from the logic so that the
lists can be read and extended at a glance."""
from __future__ import annotations

NEGATORS = frozenset({
    "no", "not", "never", "without", "none", "nor", "neither", "cannot", "nothing", "lacks", "lack", "lacking",
    "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "can't", "couldn't", "won't", "hasn't",
    "haven't",
})
# Between a negator and a mention, these make the mention the object of a relation, not the thing denied:
# "the star is not to the left of the circle" does not deny the circle.
RELATION_STOPS = frozenset({"of", "than", "above", "below", "beside", "besides", "near", "next", "under", "over",
                            "behind", "between", "left", "right", "from", "like"})
# Mentions right after these are compared, not claimed: "more circles than triangles", "the number of stars".
NON_CLAIM_BEFORE = frozenset({"than", "as", "more", "fewer", "less"})
# A negator before one of these does not deny what follows ("not only a circle but ...").
NEGATION_CANCELLERS = frozenset({"only", "just"})

# Words and punctuation that end the clause a negation can reach back into.
CLAUSE_BREAKS = frozenset({".", ";", ":", "!", "?", "(", ")", ",", "but", "while", "whereas", "although", "though",
                           "however", "and", "except", "only", "yet", "also", "instead", "rather"})
# Between two mentions, only these let the second inherit the first's negation: "no circles, squares or stars".
NEGATION_LIST_GAP = frozenset({",", "or", "nor", "any", "a", "an"})

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "single": 1, "both": 2, "zero": 0}
ARTICLES = frozenset({"a", "an", "the", "another", "this", "that", "these", "those", "each", "every", "any",
                      "some", "several", "many", "few", "multiple", "other", "various", "all", "its", "their"})
# Harmless adjectives that may sit between the article and the noun.
FILLER_ADJECTIVES = frozenset({"colored", "coloured", "solid", "bright", "dark", "light", "filled", "flat", "shaded",
                               "same", "plain", "simple", "vivid", "pale", "deep", "lone", "distinct", "different",
                               "separate", "individual", "visible", "noticeable", "prominent", "similar",
                               "equally", "fairly", "rather", "very", "quite", "relatively", "slightly", "sized",
                               "shaped", "vibrant"})
SHAPE_ADJECTIVES = {"circular": "circle", "round": "circle", "triangular": "triangle", "rectangular": "square",
                    "star-shaped": "star"}
COMPARATIVES = frozenset({"larger", "bigger", "smaller", "tinier", "largest", "biggest", "smallest"})

ROW_WORDS = {"top": 0, "upper": 0, "bottom": 2, "lower": 2}
COL_WORDS = {"left": 0, "right": 2}
MID_WORDS = frozenset({"middle", "center", "centre", "central"})
POSITION_WORDS = frozenset(ROW_WORDS) | frozenset(COL_WORDS) | MID_WORDS
POSITION_PREPOSITIONS = frozenset({"in", "at", "on", "near", "along", "toward", "towards", "within", "inside"})
POSITION_SUFFIXES = frozenset({"corner", "side", "edge", "row", "column", "part", "area", "region", "cell", "half",
                               "portion", "section", "spot", "position", "square"})
IMAGE_NOUNS = frozenset({"image", "picture", "grid", "frame", "canvas", "scene", "photo", "photograph", "figure",
                         "illustration", "drawing"})

# What may precede a position phrase that describes the mention after it ("In the center, there is ...").
CLAUSE_STARTS = frozenset({".", ",", ";", ":", "!", "?", "and", "but", "while", "(", ")"})
# Tokens allowed between a mention and a position phrase that follows it ("the circle is located in the ...").
CONNECT_AFTER = frozenset({"is", "are", "sits", "sit", "lies", "lie", "located", "placed", "positioned", "appears",
                           "appear", "can", "be", "seen", "found", "which", "that", "was", "were", "situated",
                           "drawn", "shown", "sitting", "lying", "standing", "stands"})
# ... and between a position phrase and the mention after it ("in the center, there is a ...").
CONNECT_BEFORE = frozenset({",", "there", "is", "are", "we", "you", "i", "can", "see", "find", "sits", "lies", "has",
                            "contains", "shows", "appears", "stands", "located", "placed", "one", "holds",
                            "includes", "features", "have", "contain", "hold"})
COPULAS = frozenset({"is", "are", "was", "were", "appears", "appear", "looks", "look", "seems", "seem"})
PREDICATE_FILLERS = frozenset({"also", "both", "all", "colored", "coloured", "painted", "a", "an", "in", "bright",
                               "dark", "light", "filled", "entirely", "completely", "fully", "and", ",", "very",
                               "quite"})
ABSENCE_WORDS = frozenset({"absent", "missing", "nowhere"})
PRESENCE_WORDS = frozenset({"present", "visible", "there", "shown", "included", "in", "here", "seen", "found",
                            "anywhere", "depicted", "drawn", "exist", "exists", "appear", "appears"})

# Shape words that also name everyday things; with a colour alone they do not prove scene talk.
EVERYDAY_SHAPE_NOUNS = frozenset({"ball", "box", "block", "sphere", "cube", "heart", "cross", "arrow", "ring", "moon",
                                  "cone", "pyramid", "cylinder", "crescent"})

# Contexts in which a shape word is not a shape: (word -> next words) and (word -> previous words).
NOT_SHAPE_BEFORE = {
    "square": {"root", "roots", "meter", "meters", "metre", "metres", "foot", "feet", "mile", "miles", "kilometer",
               "kilometers", "kilometre", "kilometres", "inch", "inches", "yard", "yards", "centimeter",
               "centimeters", "millimeter", "millimeters", "meal", "meals", "deal", "dance", "number", "numbers",
               "matrix", "matrices", "wave", "bracket", "brackets", "one", "function", "law", "footage", "error",
               "errors", "loss", "brackets"},
    "circle": {"back"},
    "star": {"sign", "signs", "wars", "trek", "player", "players", "athlete", "athletes", "power", "struck", "dust",
             "fruit", "fish", "anise", "rating", "ratings", "system", "systems", "formation", "cluster", "clusters",
             "chart", "student", "students", "quarterback", "performer", "performers", "witness", "topology",
             "schema", "network"},
    "ball": {"game", "games", "room", "park", "gown", "point", "pen", "bearing", "bearings", "player", "players"},
    "box": {"office", "set", "score", "plot", "plots", "constraint", "constraints"},
    "block": {"chain", "chains", "party", "buster", "quote", "quotes", "letters", "list", "size", "diagram",
              "diagrams", "cipher"},
    "dot": {"com", "net", "org", "product", "products", "matrix"},
    "disc": {"jockey", "golf", "brake", "brakes"},
    "disk": {"space", "drive", "drives", "usage", "image", "images"},
    "heart": {"rate", "rates", "attack", "attacks", "disease", "failure", "of"},
    "ring": {"road", "buffer", "buffers"},
    "triangle": {"inequality"},
    "cross": {"section", "sections", "reference", "references", "entropy", "validation", "country", "product"},
    "sphere": {"of"},
}
NOT_SHAPE_AFTER = {
    "star": {"rock", "movie", "film", "pop", "tv", "north", "shooting", "neutron", "dwarf", "super", "all", "five",
             "four", "three", "guiding", "morning", "death", "sea", "lone", "reality", "child", "rising", "youtube",
             "hollywood", "soccer", "football", "basketball", "tennis", "github", "michelin", "gold"},
    "square": {"town", "times", "city", "village", "market", "public", "least", "chi", "perfect", "magic", "fair",
               "mean", "root"},
    "circle": {"inner", "arctic", "antarctic", "social", "vicious", "full", "family", "unit", "great"},
    "box": {"black", "lunch", "tool", "mail", "post", "juke", "text", "check", "search", "dialog", "jewelry", "ice",
            "sand", "gear", "bounding", "inbox", "chatter", "pizza"},
    "block": {"city", "building", "road", "writer's", "writers", "cell", "code", "starting", "stumbling", "mental",
              "chip", "ice", "try", "except", "finally", "if", "else"},
    "ball": {"crystal", "foot", "basket", "base", "snow", "meat", "golf", "tennis", "soccer", "beach", "masked",
             "disco", "hair", "eye", "cotton"},
    "dot": {"polka", "decimal"},
    "sphere": {"public", "private", "political"},
}
