"""Person names from values, for columns whose names say nothing (`user`, `owner`, `created_by`).

A value counts as a person's name only when it has the structure of one AND starts with a given name
that real people carry:

- two to four words of letters (any script: Latin with accents, Cyrillic, Greek), each capitalised
  (or the whole value in capitals), with the particles family names carry (`van der`, `de la`,
  `di`, `von`) and initials (`J.`) allowed between; "Family, Given" is read the other way round;
- the given name is in Faker's per-locale lists of first names (en, de, fr, es, it, nl, pl, pt, sv,
  cs, tr, Indian English, romanised Japanese and Chinese, Russian, Ukrainian, Greek), which are
  maintained with the library and loaded once, lazily, as casefolded frozensets;
- the family name is a capitalised word (the lists are far from complete for family names, so their
  structure is what counts), and no word is one that marks a product, a place or a company
  (`Pro`, `Street`, `City`, `GmbH`), nor a digit anywhere: `Mercedes Sprinter` and `Victoria Park`
  start with given names, but a column of car models or parks rarely reaches the 60% threshold.

Handles (`jdoe42`, `ada.lovelace`), single words and lower-case pairs are never names here.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Iterable
from functools import cache

# Faker's person providers whose name lists are read; the locale's language is what the evidence names.
_LOCALES = (
    "en_US", "en_GB", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT", "pt_BR",
    "sv_SE", "cs_CZ", "tr_TR", "ru_RU", "uk_UA", "el_GR", "ja_JP", "zh_CN",
)  # fmt: skip
_GIVEN_ATTRS = ("first_names", "first_names_female", "first_names_male", "first_romanized_names",
                "first_romanized_names_female", "first_romanized_names_male")  # fmt: skip

# Lower-case words inside a family name: van der Berg, de la Cruz, di Marco, von Trapp, dos Santos.
_PARTICLES = "van der den de la le du des di da del della dos das von zu ten ter te y e bin ibn al el"
PARTICLES = frozenset(_PARTICLES.split())
# Words that make a capitalised pair a product, a place or an organisation rather than a person.
_NOT_A_PERSON = """
    ltd limited llc inc incorporated corp corporation co company gmbh ag kg sa sas sarl srl spa bv nv plc oy ab
    group holdings holding partners associates foundation trust bank university college school hospital clinic
    hotel restaurant cafe bar shop store market mall center centre institute society club team labs studio
    street st road rd avenue ave lane ln drive dr boulevard blvd way place square park garden gardens city town
    village county state province district bay beach harbour harbor port fort mount mountain hill hills valley
    lake river falls springs island islands airport station bridge north south east west new upper lower saint
    santa san sankt
    pro max mini plus ultra lite air classic edition deluxe premium standard special limited original sport
    series model version gen generation node outlet red blue green black white silver gold grey gray pink orange purple
    yellow brown cake pie pizza salad sauce burger sandwich soup wine beer coffee tea juice cream cheese
"""
NOT_A_PERSON = frozenset(_NOT_A_PERSON.split())

# Titles before a name and suffixes after it, dropped before the name is read ("Dr. Ada Lovelace").
_TITLE_WORDS = "dr mr mrs ms miss mx prof sir dame herr frau m mme mlle sr sra srta sig dott dhr mevr pan pani"
_TITLES = frozenset(_TITLE_WORDS.split())
_SUFFIX_WORDS = "jr sr ii iii iv md phd dds dvm esq"
_SUFFIXES = frozenset(_SUFFIX_WORDS.split())
# Russian and Ukrainian patronymics: "Family Given Patronymic" is the formal order.
_PATRONYMIC_ENDINGS = ("вич", "вна", "ична", "ьич", "vich", "vna", "ichna")

_INITIAL_RE = re.compile(r"^[^\W\d_]\.$")
_WORD_RE = re.compile(r"^[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*$")


@cache
def _name_lists() -> dict[str, frozenset[str]]:
    """{folded given name: languages}, from Faker's lists."""
    given: dict[str, set[str]] = {}
    for locale in _LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        language = locale.split("_")[0]
        for attr in _GIVEN_ATTRS:
            for name in getattr(provider, attr, ()):
                for part in str(name).split():
                    if len(part) > 1:
                        given.setdefault(_fold(part), set()).add(language)
    return {k: frozenset(v) for k, v in given.items()}


def _fold(word: str) -> str:
    """Casefolded, accents dropped: Seán is Sean, JOSÉ is josé is jose."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def given_name_languages(word: str) -> frozenset[str]:
    """The languages whose lists know `word` (or the first part of a hyphenated `word`, as in
    Jean-Luc) as a given name; empty when none does."""
    lists = _name_lists()
    found = lists.get(_fold(word))
    if found is None and "-" in word:
        found = lists.get(_fold(word.split("-")[0]))
    return found or frozenset()


def _capitalised(word: str, all_caps: bool) -> bool:
    if not _WORD_RE.match(word) or len(word) < 2:
        return False
    if all_caps:
        return word.isupper()
    # Title case, or an inner capital as in McDonald, O'Brien, DeVito, Müller-Lüdenscheidt.
    return word[0].isupper() and any(ch.islower() for ch in word)


def person_name_languages(value: str) -> frozenset[str] | None:
    """The languages of the given name when `value` reads as a person's full name, else None."""
    text = " ".join(value.split())
    if not 4 <= len(text) <= 80 or any(ch.isdigit() for ch in text):
        return None
    if text.count(",") == 1:
        family_part, given_part = (p.strip() for p in text.split(","))
        text = f"{given_part} {family_part}"
    elif "," in text:
        return None
    words = text.split(" ")
    while len(words) > 2 and words[0].casefold().rstrip(".") in _TITLES:
        words = words[1:]
    while len(words) > 2 and words[-1].casefold().rstrip(".,") in _SUFFIXES:
        words = words[:-1]
    if not 2 <= len(words) <= 5:
        return None
    if len(words) == 3 and words[2].casefold().endswith(_PATRONYMIC_ENDINGS):
        words = [words[1], words[2], words[0]]  # Family Given Patronymic -> Given Patronymic Family
    letters = [ch for ch in text if ch.isalpha()]
    all_caps = len(letters) > 3 and all(ch.isupper() for ch in letters)
    if any(w.casefold().strip(".") in NOT_A_PERSON for w in words):
        return None
    given, family = words[0], words[-1]
    if not _capitalised(given, all_caps) or not _capitalised(family, all_caps):
        return None
    for middle in words[1:-1]:
        if not (middle in PARTICLES or _INITIAL_RE.match(middle) or _capitalised(middle, all_caps)):
            return None
    languages = given_name_languages(given)
    if not languages:
        return None
    return languages


def is_person_name(value: str) -> bool:
    return person_name_languages(value) is not None


def is_name_part(value: str) -> bool:
    """One capitalised word or a full name: what a `first_name` or `surname` column holds."""
    text = value.strip()
    return _capitalised(text, text.isupper()) or is_person_name(text)


def person_name_shape(values: Iterable[str]) -> str:
    languages: dict[str, int] = {}
    for v in values:
        for language in person_name_languages(v) or ():
            languages[language] = languages.get(language, 0) + 1
    top = sorted(languages, key=lambda k: (-languages[k], k))[:5]
    return "Given-name Family-name" + (f", given names known in {', '.join(top)}" if top else "")
