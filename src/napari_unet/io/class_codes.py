"""What each class of a segmentation is, for the tools that open it next: a coded concept
and a display colour.

A viewer (OHIF, 3D Slicer, a PACS) knows what a DICOM SEG segment shows from its
Segmented Property Category and Type, coded concepts from DICOM's context groups: CID
7150 for the category, CID 7151 for the type (SNOMED CT mostly; CID 7151 is the union of
one group per category, CID 7191..7198), and colours it by its
RecommendedDisplayCIELabValue. A model file may carry a :class:`ClassCode` per class
(``class_codes`` in its metadata: ``napari-unet train/import --class-codes``, made here
from pydicom's copy of those context groups, so a code is never invented). A class
without one is coded as 3D Slicer codes a segment nobody named: category and type SCT
85756007 "Tissue", the class name as the segment's label (:data:`FALLBACK`).

Colours: the palette napari-unet's label layers use (:data:`PALETTE`, by label value),
unless the model file gives a class its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# colours for label values 1.. (0 is background), safe for colour-blind readers: Okabe &
# Ito's palette (black left out: invisible on MRI/CT), then Paul Tol's "muted"
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7",
           "#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99",
           "#999933", "#AA4499")
# coding scheme designators of PS3.16 Table 8-1 that a segment may use (no private "99..."
# scheme: no other tool knows what its codes mean)
SCHEMES = ("SCT", "DCM", "FMA", "UBERON", "RADLEX", "NCIt", "LN", "UMLS", "BARI", "MDC",
           "ACR", "UCUM", "SRT")
# CID 7150 category -> the context group of its types (CID 7151 is their union); looked
# through in this order when only a type is given (a few types sit in two groups)
CATEGORY_GROUPS = {"AnatomicalStructure": 7192, "Tissue": 7191,
                   "MorphologicallyAbnormalStructure": 7194, "PhysicalObject": 7193,
                   "BodySubstance": 7197, "Substance": 7198, "Function": 7195,
                   "SpatialAndRelationalConcept": 7196}
MAX_VALUE = 16  # CodeValue is SH
MAX_MEANING = 64  # CodeMeaning is LO


@dataclass(frozen=True)
class Concept:
    """One coded concept: (scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, d: dict) -> Concept:
        return cls(str(d["scheme"]), str(d["value"]), str(d["meaning"]))

    def code(self):
        """The pydicom ``Code`` highdicom takes."""
        from pydicom.sr.coding import Code

        return Code(self.value, self.scheme, self.meaning)

    def __str__(self) -> str:
        return f"{self.meaning} ({self.scheme} {self.value})"


@dataclass(frozen=True)
class ClassCode:
    """A class's Segmented Property Category and Type, and its display colour (RGB,
    0..255; None: the palette's colour for its label value)."""

    category: Concept
    type: Concept
    color: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        d = {"category": self.category.to_dict(), "type": self.type.to_dict()}
        if self.color is not None:
            d["color"] = list(self.color)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ClassCode:
        color = d.get("color")
        return cls(Concept.from_dict(d["category"]), Concept.from_dict(d["type"]),
                   None if color is None else tuple(int(c) for c in color))

    def describe(self) -> str:
        return f"{self.category.meaning} / {self.type}"


TISSUE = Concept("SCT", "85756007", "Tissue")
FALLBACK = ClassCode(TISSUE, TISSUE)  # CID 7150 and CID 7151 (7191): "some tissue"


def palette_rgb(value: int) -> tuple[int, int, int]:
    """The layers' colour of label ``value`` (>= 1) as 0..255 RGB."""
    text = PALETTE[(int(value) - 1) % len(PALETTE)]
    return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))


def class_color(value: int, code: ClassCode | None) -> tuple[int, int, int]:
    """A class's display colour: its model's own, else the palette's."""
    return code.color if code is not None and code.color is not None else palette_rgb(value)


def class_codes_for_labels(n_labels: int, codes) -> tuple[ClassCode | None, ...]:
    """``codes`` (or None) as one entry per label value, missing ones None."""
    codes = list(codes or ())
    return tuple(codes[i] if i < len(codes) else None for i in range(n_labels))


# --- codes a person names: pydicom's copy of DICOM's context groups -------------------------

_SCHEME_VALUE = re.compile(r"^([A-Za-z][A-Za-z0-9.\-]*):(\S+)$")


def resolve(text: str) -> ClassCode | None:
    """A class code from what a person types (``-`` or ``none``: no code):

    - a CID 7151 keyword as pydicom spells it: ``GrayMatter``, ``Liver``, ``Neoplasm``
      (the category is the group the type belongs to);
    - ``Category/Type`` to choose the category: ``Tissue/Blood``;
    - ``SCHEME:VALUE`` of a CID 7151 type: ``SCT:389081007``;
    - any of these with ``#RRGGBB`` after it for the colour: ``GrayMatter#E69F00``.

    Raises ``ValueError`` naming what is not in DICOM's context groups.
    """
    text = text.strip()
    if text.lower() in ("-", "none", ""):
        return None
    color = None
    if "#" in text:
        text, hex_color = text.split("#", 1)
        color = _rgb(hex_color)
    category_key, _, type_key = text.rpartition("/")
    category_key = _category_keyword(category_key) if category_key else ""
    type_key = _keyword(type_key)
    if category_key:
        if type_key not in _group(CATEGORY_GROUPS[category_key]):
            raise ValueError(f"{type_key} is not a type of the category {category_key} "
                             f"(DICOM CID {CATEGORY_GROUPS[category_key]})")
    else:
        category_key = next(c for c, cid in CATEGORY_GROUPS.items() if type_key in _group(cid))
    return ClassCode(_concept(7150, category_key), _concept(7151, type_key), color)


def _keyword(text: str) -> str:
    """A CID 7151 keyword from a keyword or SCHEME:VALUE."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr._concepts_dict import concepts

    match = _SCHEME_VALUE.match(text)
    if match:
        scheme, value = match.groups()
        for keyword in cid_concepts[7151].get(scheme, ()):
            if value in concepts[scheme][keyword]:
                return keyword
        raise ValueError(f"{text}: no segmentation property type (DICOM CID 7151) has this "
                         "code")
    types = _group(7151)
    if text in types:
        return text
    folded = {k.lower(): k for k in types}  # case, spaces and spelling aside: "grey matter"
    key = text.replace(" ", "").lower().replace("grey", "gray")
    if key in folded:
        return folded[key]
    close = sorted(k for k in types if key and key in k.lower())[:5]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(f"{text}: not a segmentation property type of DICOM CID 7151, as "
                     f"pydicom names them (e.g. GrayMatter, WhiteMatter, Liver){hint}")


def _category_keyword(text: str) -> str:
    for key in CATEGORY_GROUPS:
        if key.lower() == text.replace(" ", "").lower():
            return key
    raise ValueError(f"{text}: not a segmentation property category (DICOM CID 7150: "
                     f"{', '.join(CATEGORY_GROUPS)})")


def _group(cid: int) -> set[str]:
    from pydicom.sr._cid_dict import cid_concepts

    return {k for keywords in cid_concepts[cid].values() for k in keywords}


def _concept(cid: int, keyword: str) -> Concept:
    from pydicom.sr.codedict import codes

    code = getattr(getattr(codes, f"cid{cid}"), keyword)
    return Concept(code.scheme_designator, code.value, code.meaning)


def _rgb(text: str) -> tuple[int, int, int]:
    if not re.fullmatch(r"[0-9A-Fa-f]{6}", text):
        raise ValueError(f"#{text}: a colour is # and six hex digits (RRGGBB)")
    return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))


def class_codes_from_texts(texts, n_labels: int, flag: str = "--class-codes"):
    """One class code per label value from what a person typed (:func:`resolve`), the
    background's left out or given; ``SettingsError`` naming ``flag`` otherwise."""
    from ..errors import SettingsError

    if texts is None:
        return None
    texts = list(texts)
    if len(texts) == n_labels - 1:
        texts = ["-", *texts]  # no code for the background: it gets no segment anyway
    if len(texts) != n_labels:
        raise SettingsError(f"{flag}: {len(texts)} codes for {n_labels} classes; give one per "
                            "class after the background ('-' for none)")
    try:
        return tuple(resolve(t) for t in texts)
    except ValueError as exc:
        raise SettingsError(f"{flag}: {exc}") from None


def standard(code: ClassCode | None) -> ClassCode | None:
    """``code`` if a model file may keep it (a DICOM SEG from elsewhere may use private
    schemes or overlong texts), else None."""
    return code if code is not None and _entry_problem(code.to_dict()) is None else None


# --- model metadata: the structure (checked on every load) ----------------------------------


def problem(entries) -> str | None:
    """Why ``entries`` (JSON from a model file) is no list of class codes, or None."""
    if not isinstance(entries, list):
        return "must be a list with one entry (or null) per class"
    for i, entry in enumerate(entries):
        if entry is None:
            continue
        why = _entry_problem(entry)
        if why:
            return f"entry {i} {why}"
    return None


def _entry_problem(entry) -> str | None:
    if not isinstance(entry, dict) or not {"category", "type"} <= set(entry) or \
            set(entry) - {"category", "type", "color"}:
        return "must be an object with a category, a type and optionally a color"
    for key in ("category", "type"):
        why = _concept_problem(entry[key])
        if why:
            return f"{key} {why}"
    color = entry.get("color")
    if color is not None and not (isinstance(color, list) and len(color) == 3 and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
        return "color must be three integers 0..255 (RGB)"
    return None


def _concept_problem(concept) -> str | None:
    if not isinstance(concept, dict) or set(concept) != {"scheme", "value", "meaning"}:
        return "must be an object with scheme, value and meaning"
    if concept["scheme"] not in SCHEMES:
        return (f"scheme {str(concept['scheme'])[:20]!r} is not a standard coding scheme "
                f"(one of {', '.join(SCHEMES)})")
    for key, most in (("value", MAX_VALUE), ("meaning", MAX_MEANING)):
        text = concept[key]
        if not isinstance(text, str) or not text.strip() or len(text) > most or \
                "\\" in text or not text.isprintable():
            return f"{key} must be a printable text of 1..{most} characters"
    return None
