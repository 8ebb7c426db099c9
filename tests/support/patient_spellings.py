"""Patients and the ways people spell them, for the privacy tests and the fuzzing
(hypothesis strategies), and an independent check that a text leaks none of them.

A patient is written in a DICOM header the canonical way (``Müller^Jürgen``) and then
spelled as people do in descriptions, folder and file names: any case, accents dropped
or ``ü`` written ``ue``, apostrophes dropped, parts joined by a space, dot, underscore,
hyphen or nothing, given name first or last, the given name cut to an initial, the ID
inside a longer token.
"""

from __future__ import annotations

import re
import unicodedata

from hypothesis import strategies as st

FAMILY = ["Müller", "O'Brien", "Núñez", "Kowalczyk", "Dvořák", "Łukaszewicz", "Nakamura",
          "Okonkwo", "Papadopoulos", "Søndergaard", "Øvergård", "Weiß", "D'Arcy", "Zhang",
          "Van der Berg", "Smith-Jones", "Björkqvist", "Ødegaard", "Yilmaz", "Gonçalves"]
GIVEN = ["Jürgen", "François", "Søren", "José", "Zoë", "Małgorzata", "Yusuf", "Renée",
         "Ximena", "Åsa", "Björn", "Chloé", "Joaquín", "Wojciech", "Hyunwoo", "Nkechi"]
RANDOM_NAME = st.text("ghjkmnpqvwxyz", min_size=2, max_size=4).flatmap(
    lambda core: st.sampled_from(["", "a", "o", "u", "i"]).map(lambda v: core + v + core[::-1]))
_BY_HAND = {"ø": "o", "æ": "ae", "ß": "ss", "ł": "l", "đ": "d", "œ": "oe"}
_GERMAN = {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}


def plain(text: str) -> str:
    """Letters as an ASCII keyboard writes them: no accents (``ø`` as ``o`` ...)."""
    text = "".join(_BY_HAND.get(c.lower(), c) if c.lower() in _BY_HAND else c for c in text)
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


def letters(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` only (the reference form)."""
    return re.sub(r"[^a-z0-9]", "", plain(text).lower())


@st.composite
def patients(draw):
    """(family, given, patient ID) with real and random names."""
    family = draw(st.one_of(st.sampled_from(FAMILY), RANDOM_NAME.map(str.title)))
    given = draw(st.one_of(st.sampled_from(GIVEN), RANDOM_NAME.map(str.title)))
    pid = draw(st.from_regex(r"(MRN|PID|H)?-?[1-9][0-9]{5,8}", fullmatch=True))
    return family, given, pid


@st.composite
def spellings(draw, patient):
    """One way a person writes ``patient`` in a description or a file name."""
    family, given, pid = patient
    accents = draw(st.sampled_from(["keep", "drop", "german"]))

    def spell(name: str) -> str:
        if accents == "drop":
            name = plain(name)
        elif accents == "german":
            name = plain("".join(_GERMAN.get(c, c) for c in name))
        if draw(st.booleans()):
            name = name.replace("'", "").replace("’", "")
        sep = draw(st.sampled_from([" ", "", "-", "_"]))
        name = sep.join(name.split(" "))
        return draw(st.sampled_from([name, name.upper(), name.lower(), name.title()]))

    form = draw(st.sampled_from(["family given", "given family", "initial family",
                                 "family initial", "family", "given", "id"]))
    if form == "id":
        digits = re.sub(r"\D", "", pid)
        return draw(st.sampled_from([f"MRN{digits}", f"{digits}_scan", f"x{pid}y", pid]))
    f, g = spell(family), spell(given)
    initial = g[0] + draw(st.sampled_from(["", "."]))
    parts = {"family given": [f, g], "given family": [g, f], "initial family": [initial, f],
             "family initial": [f, initial], "family": [f], "given": [g]}[form]
    joiner = draw(st.sampled_from([" ", ".", "_", "-", "", "^"]))
    return joiner.join(parts)


def leaks(text: str, patient) -> list[str]:
    """The name parts (4+ letters) and ID digits of ``patient`` found in ``text``, by the
    reference form (letters only, no accents, no case) of each of its words, and the ID's
    digits as a number of their own."""
    family, given, pid = patient
    words = [letters(w) for w in re.split(r"[^\w']+", text)]
    words += [letters(w) for w in re.split(r"\W+", text)]  # O'Brien also as O / Brien
    found = []
    for part in re.split(r"[\s\-]+", f"{family} {given}"):
        for form in {letters(part), letters("".join(_GERMAN.get(c, c) for c in part))}:
            if len(form) >= 4 and any(form in w for w in words):
                found.append(part)
    # the ID's digits as a whole number: inside a longer one they are chance (a timing, a
    # Dice figure or a hash of the report holding '0042' failed a run now and then)
    digits = re.sub(r"\D", "", pid)
    if digits and digits in re.findall(r"\d+", text):
        found.append(pid)
    return found
