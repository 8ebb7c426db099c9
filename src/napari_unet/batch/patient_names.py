"""Patient identifiers from DICOM headers, recognised however a person spelled them.

A name in the header (``O'BRIEN^MARY``, ``Müller^Jürgen``) is looked for in series
descriptions, file names and messages in every spelling people use: any case, with or
without accents and other diacritics (Unicode NFKD; ``ø``, ``æ``, ``ß``, ``ł`` ... by
hand; German ``ü`` also as ``ue``), apostrophes dropped or kept (``OBrien``), parts
joined by hyphens, dots, underscores, spaces or nothing (``mary.obrien``,
``MaryOBrien``, ``obrienmary``), given and family name in either order, initials with a
family name (``MOBrien``, ``J.Muller``). IDs (PatientID, other IDs, the accession number)
and the birth date are found inside longer tokens too (``MRN123456_t1``), with or without
separators (``PID-12345`` as ``pid12345``).

Text is matched on its *folded* form (see :func:`fold`), token by token; what matches is
replaced in the original text. Tokens are runs of letters and digits; a token is also cut
where case or letters/digits change (``MaryOBrien`` -> ``Mary|O|Brien``) and where an
apostrophe was. A token is identifying when it, or a run of its pieces, is a name part;
when it is made of name parts, initials and digits alone (``jdoe``, ``doejane2``); or when
it holds a name part of five letters or more. Names only a file name carries cannot be
known here: see ``--names counter``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_APOSTROPHES = set("'’‘`´ʼʹ′")
_BY_HAND = {"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ł": "l", "þ": "th",
            "ð": "d", "ı": "i", "ħ": "h", "ŋ": "ng", "ĸ": "k", "ſ": "s"}
_GERMAN = {"ä": "ae", "ö": "oe", "ü": "ue"}
# parts of a name that say nothing about the person (particles, titles, placeholders)
_NOT_NAMES = {
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la",
    "le", "el", "al", "bin", "ibn", "ben", "ter", "ten", "y", "e", "dr", "mr", "mrs", "ms",
    "miss", "prof", "md", "phd", "jr", "sr", "ii", "iii", "iv", "sir", "anonymous", "anon",
    "anonymized", "anonymised", "unknown", "patient", "test", "phantom", "none", "na",
    "removed", "deidentified", "xxx", "nn",
}
_JOINERS = set(" ^_-.,")  # what joins the parts of one name ("Doe^Jane", "O'Brien, M.")
MIN_NAME = 2  # letters of a name part matched as a whole token (Li, Wu, Ng)
MIN_INSIDE = 5  # letters of a name part matched anywhere inside a longer token
MIN_ID = 3  # characters of an ID (without separators) worth looking for
MIN_ID_DIGITS = 4  # digits of a run inside an ID looked for on its own
REDACTED = "[redacted]"


def fold_char(c: str) -> str:
    """One character as matching sees it: no case, no diacritics, no apostrophes."""
    if c in _APOSTROPHES:
        return ""
    lower = c.casefold()
    if lower in _BY_HAND:
        return _BY_HAND[lower]
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", lower)
                    if not unicodedata.combining(ch))
    return plain.casefold()


def fold(text: str) -> str:
    return "".join(fold_char(c) for c in text)


def squeeze(text: str) -> str:
    """The folded letters and digits of ``text``, nothing else."""
    return "".join(c for c in fold(text) if c.isalnum())


def _variants(word: str) -> set[str]:
    """Folded spellings of one name part: as folded, German umlauts as ``ae/oe/ue``, and
    an ASCII ``ae/oe/ue`` read back as the plain vowel (``Mueller`` -> ``muller``)."""
    folded = squeeze(word)
    out = {folded}
    german = "".join(_GERMAN.get(c, c) for c in word.casefold())
    out.add(squeeze(german))
    out.add(re.sub(r"(?<=[a-z])([aou])e(?=[a-z])", r"\1", folded))
    return {v for v in out if v}


class PatientIdentifiers:
    """Name parts, initials, IDs and dates of the patients met in a batch, and the
    matching of them in any text (see the module docstring). Picklable plain sets."""

    def __init__(self):
        self.names: set[str] = set()
        self.initials: set[str] = set()
        # each person's (name parts, initials): initials join only their own names
        self.people: set[tuple[frozenset[str], frozenset[str]]] = set()
        self.ids: set[str] = set()
        self.words: set[tuple[str, ...]] = set()  # whole token runs (file names)

    def __bool__(self) -> bool:
        return bool(self.names or self.ids or self.words)

    def __ior__(self, other: PatientIdentifiers) -> PatientIdentifiers:
        self.names |= other.names
        self.initials |= other.initials
        self.people |= other.people
        self.ids |= other.ids
        self.words |= other.words
        return self

    # -- what is added ------------------------------------------------------------------

    def add_person_name(self, raw: str) -> None:
        """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``, groups split by
        ``=``) or a name written freely (``Jane Doe``, ``DOE, JANE``)."""
        names, initials = set(), set()
        for group in str(raw).split("="):
            parts = group.split("^")
            if len(parts) == 1 and "," in group:
                parts = group.split(",", 1)
            for component in parts[:3]:  # prefix and suffix are titles
                words = [w for w in re.split(r"[\s\-._,;/]+", component) if squeeze(w)]
                for word in words:
                    initials.add(squeeze(word)[0])
                    names.update(v for v in _variants(word)
                                 if len(v) >= MIN_NAME and v not in _NOT_NAMES)
                if len(words) > 1:  # "Smith-Jones", "van der Berg": joined, too
                    names.update(_variants("".join(words)))
        if names:
            self.names |= names
            self.initials |= initials
            self.people.add((frozenset(names), frozenset(initials)))

    def add_id(self, raw: str) -> None:
        """An identifier (PatientID, AccessionNumber, ...): whole, and its digit runs."""
        value = squeeze(str(raw))
        if len(value) >= MIN_ID and value not in _NOT_NAMES:
            self.ids.add(value)
        for run in re.findall(rf"\d{{{MIN_ID_DIGITS},}}", value):
            self.ids.add(run)
            if len(run.lstrip("0")) >= MIN_ID_DIGITS:
                self.ids.add(run.lstrip("0"))

    def add_date(self, raw: str) -> None:
        """A DICOM date (YYYYMMDD) as people write it: ISO, day first or month first."""
        digits = squeeze(str(raw))
        if not re.fullmatch(r"\d{8}", digits):
            self.add_id(digits)
            return
        y, m, d = digits[:4], digits[4:6], digits[6:]
        self.ids.update({y + m + d, d + m + y, m + d + y, y[2:] + m + d, d + m + y[2:]})

    def add_word(self, raw: str) -> None:
        """A name (e.g. an input file's) matched only as a whole run of tokens."""
        tokens = tuple(t for t, *_ in _tokens(str(raw)))
        if tokens:
            self.words.add(tokens)

    def add_dataset(self, ds) -> None:
        """Every patient identifier of a DICOM header."""
        for keyword in ("PatientName", "OtherPatientNames", "PatientBirthName",
                        "PatientMotherBirthName", "ResponsiblePerson"):
            for value in _values(ds, keyword) + _other_decodings(ds, keyword):
                self.add_person_name(value)
        for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber",
                        "MedicalRecordLocator", "IssuerOfPatientID"):
            for value in _values(ds, keyword):
                if keyword != "IssuerOfPatientID":
                    self.add_id(value)
        for item in _sequence(ds, "OtherPatientIDsSequence"):
            for value in _values(item, "PatientID"):
                self.add_id(value)
        for value in _values(ds, "PatientBirthDate"):
            self.add_date(value)

    # -- matching -----------------------------------------------------------------------

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where identifiers are in ``text``: (start, end) of the original characters."""
        if not self or not text:
            return []
        found: list[tuple[int, int]] = []
        tokens = _tokens(text)
        for folded, start, end, pieces in tokens:
            found += self._token_spans(folded, start, end, pieces)
        found += self._word_spans(tokens)
        found += _whole_tokens(self._id_spans(text), tokens)
        return _merged(found + self._initials_beside(_merged(found), tokens, text))

    def _initials_beside(self, found: list, tokens, text: str) -> list:
        """Initials next to a name found (``J. Muller``, ``obrien_m``): with the name,
        they say who it is."""
        extra = []
        for folded, start, end, _ in tokens:
            if len(folded) != 1 or folded not in self.initials:
                continue
            for a, b in found:
                gap = text[end:a] if end <= a else text[b:start]
                if len(gap) <= 2 and not any(c.isalnum() for c in gap):
                    extra.append((start, end))
        return extra

    def found_in(self, text: str) -> bool:
        return bool(self.spans(text))

    def redact(self, text: str | None, by: str = REDACTED) -> str | None:
        if not text:
            return text
        spans: list[list[int]] = []
        for start, end in self.spans(text):  # "Doe^Jane": one redaction, not two
            gap = text[spans[-1][1]:start] if spans else "x"
            if len(gap) <= 2 and all(c in _JOINERS for c in gap):
                spans[-1][1] = end
            else:
                spans.append([start, end])
        out, last = [], 0
        for start, end in spans:
            out += [text[last:start], by]
            last = end
        return "".join(out) + text[last:]

    def _token_spans(self, folded: str, start: int, end: int, pieces) -> list:
        if folded in self.names or folded in self.ids:
            return [(start, end)]
        hits = []
        for i in range(len(pieces)):  # runs of pieces: "Mary|O|Brien" -> mary, obrien
            joined = ""
            for j in range(i, len(pieces)):
                joined += pieces[j][0]
                if joined in self.names:
                    hits.append((pieces[i][1], pieces[j][2]))
        if hits:
            return hits
        if any(n in folded for n in self._long_names()) or self._made_of_names(folded):
            return [(start, end)]
        return []

    def _long_names(self) -> list[str]:
        """Name parts long enough to be looked for inside longer tokens (cached)."""
        cached = self.__dict__.get("_long")
        if cached is None or cached[0] != len(self.names):
            cached = self._long = (len(self.names),
                                   [n for n in self.names if len(n) >= MIN_INSIDE])
        return cached[1]

    def _made_of_names(self, token: str) -> bool:
        """``token`` is one person's name parts and initials, and digits, only, with a
        name part of 3+ letters or two name parts (``jdoe``, ``doejane``, ``liwei``,
        ``mullerj2``; not ``does``: an ``s`` is not one of Jane Doe's initials)."""
        return any(_covers(token, names, initials) for names, initials in self.people
                   if any(m in token for m in names))

    def _word_spans(self, tokens) -> list:
        if not self.words:
            return []
        cached = self.__dict__.get("_longest")
        if cached is None or cached[0] != len(self.words):  # words added since: again
            cached = self._longest = (len(self.words), max(len(w) for w in self.words))
        longest = cached[1]
        folded = [t[0] for t in tokens]
        hits = []
        for i in range(len(tokens)):
            for k in range(1, min(longest, len(tokens) - i) + 1):
                if tuple(folded[i:i + k]) in self.words:
                    hits.append((tokens[i][1], tokens[i + k - 1][2]))
        return hits

    def _id_spans(self, text: str) -> list:
        if not self.ids:
            return []
        chars, owners = [], []
        for index, c in enumerate(text):
            for f in fold_char(c):
                if f.isalnum():
                    chars.append(f)
                    owners.append(index)
        stream = "".join(chars)
        hits = []
        for needle in self.ids:
            at = stream.find(needle)
            while at >= 0:
                hits.append((owners[at], owners[at + len(needle) - 1] + 1))
                at = stream.find(needle, at + 1)
        return hits


def _tokens(text: str) -> list[tuple[str, int, int, list[tuple[str, int, int]]]]:
    """(folded token, start, end, pieces) for each run of letters and digits in ``text``
    (apostrophes inside a word do not end it); pieces are (folded, start, end) where case
    or letters/digits change, or where an apostrophe was."""
    out, current = [], []  # current: (original index, original char, folded)
    for index, c in enumerate(text + " "):
        f = fold_char(c)
        if c in _APOSTROPHES and current:
            current.append((index, c, ""))
            continue
        if f and all(ch.isalnum() for ch in f):
            current.append((index, c, f))
            continue
        if current:
            out.append(_token(current))
            current = []
    return out


def _token(chars: list) -> tuple[str, int, int, list]:
    while chars and chars[-1][2] == "":  # a trailing apostrophe is not part of the word
        chars = chars[:-1]
    pieces, piece = [], []
    for k, (index, _, f) in enumerate(chars):
        if piece and _cut_before(chars, k):
            pieces.append(piece)
            piece = []
        if f:
            piece.append((index, f))
    if piece:
        pieces.append(piece)
    folded = "".join(f for *_, f in chars)
    spans = [("".join(f for _, f in p), p[0][0], p[-1][0] + 1) for p in pieces]
    return folded, chars[0][0], chars[-1][0] + 1, spans


def _cut_before(chars: list, k: int) -> bool:
    prev, cur = chars[k - 1][1], chars[k][1]
    nxt = chars[k + 1][1] if k + 1 < len(chars) else ""
    if chars[k - 1][2] == "":  # just after an apostrophe
        return True
    if chars[k][2] == "":
        return False
    if prev.isdigit() != cur.isdigit():
        return True
    if prev.islower() and cur.isupper():
        return True
    return prev.isupper() and cur.isupper() and nxt.islower()


def _covers(token: str, names: frozenset[str], initials: frozenset[str]) -> bool:
    """Whether ``token`` is ``names``, ``initials`` and digits end to end, with a name of
    3+ letters or two names among them."""
    n = len(token)
    # best[i]: (name parts used, longest part) of a cover of token[:i], or None
    best: list[tuple[int, int] | None] = [None] * (n + 1)
    best[0] = (0, 0)
    for i in range(n):
        if best[i] is None:
            continue
        count, longest = best[i]
        steps = [(i + len(m), 1, len(m)) for m in names if token.startswith(m, i)]
        if token[i] in initials:
            steps.append((i + 1, 0, 0))
        if token[i].isdigit():
            steps.append((i + len(re.match(r"\d+", token[i:]).group()), 0, 0))
        for k, more, size in steps:
            score = (count + more, max(longest, size))
            if best[k] is None or score > best[k]:
                best[k] = score
    end = best[n]
    return end is not None and (end[1] >= 3 or end[0] >= 2)


def _whole_tokens(spans: list[tuple[int, int]], tokens) -> list[tuple[int, int]]:
    """Each span widened to the tokens it touches (an ID inside ``MRN0012345x``)."""
    out = []
    for a, b in spans:
        touched = [(s, e) for _, s, e, _ in tokens if s < b and a < e]
        out.append((min([a, *(s for s, _ in touched)]), max([b, *(e for _, e in touched)])))
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def _values(ds, keyword: str) -> list[str]:
    """A tag's values as text ('' and unreadable values left out)."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert: nothing to learn
        return []
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == \
        "MultiValue" else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def _other_decodings(ds, keyword: str) -> list[str]:
    """A name's bytes read as UTF-8 and as Latin-1 too: files often hold UTF-8 without
    saying so (no SpecificCharacterSet), which reads as ``MÃ¼ller`` for ``Müller``."""
    try:
        values = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return []
    items = values if isinstance(values, (list, tuple)) or type(values).__name__ == \
        "MultiValue" else [values]
    out = []
    for value in items:
        raw = getattr(value, "original_string", None)
        if isinstance(raw, bytes):
            for codec in ("utf-8", "latin-1", "cp1252"):
                try:
                    out.append(raw.decode(codec))
                except UnicodeDecodeError:
                    continue
    return out


def _sequence(ds, keyword: str) -> list:
    try:
        return list(ds.get(keyword) or [])
    except Exception:  # noqa: BLE001
        return []


def from_strings(values: Iterable[str]) -> PatientIdentifiers:
    """Identifiers from plain strings: each a name, and an ID when it holds a digit."""
    ids = PatientIdentifiers()
    for value in values:
        ids.add_person_name(value)
        if any(c.isdigit() for c in str(value)):
            ids.add_id(value)
    return ids


def as_identifiers(values) -> PatientIdentifiers:
    return values if isinstance(values, PatientIdentifiers) else from_strings(values or ())
