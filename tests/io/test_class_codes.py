"""Class codes come from DICOM's context groups as pydicom spells them, never invented;
colours from the layers' palette."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from napari_unet.errors import SettingsError
from napari_unet.io.class_codes import (
    FALLBACK,
    PALETTE,
    ClassCode,
    class_codes_from_texts,
    class_color,
    palette_rgb,
    problem,
    resolve,
    standard,
)


@pytest.mark.parametrize(("text", "category", "kind"), [
    ("GrayMatter", codes.cid7150.AnatomicalStructure, codes.cid7151.GrayMatter),
    ("gray matter", codes.cid7150.AnatomicalStructure, codes.cid7151.GrayMatter),
    ("grey matter", codes.cid7150.AnatomicalStructure, codes.cid7151.GrayMatter),
    ("SCT:389080008", codes.cid7150.AnatomicalStructure, codes.cid7151.WhiteMatter),
    ("Tissue/Blood", codes.cid7150.Tissue, codes.cid7151.Blood),
    ("Neoplasm", codes.cid7150.MorphologicallyAbnormalStructure, codes.cid7151.Neoplasm),
    ("CerebrospinalFluid", codes.cid7150.AnatomicalStructure,
     codes.cid7151.CerebrospinalFluid),
])
def test_a_typed_code_is_the_context_groups_concept(text, category, kind):
    code = resolve(text)
    assert (code.category.scheme, code.category.value, code.category.meaning) == (
        category.scheme_designator, category.value, category.meaning)
    assert (code.type.scheme, code.type.value, code.type.meaning) == (
        kind.scheme_designator, kind.value, kind.meaning)
    assert code.color is None
    assert code.type.code() == kind  # what highdicom is given


def test_a_colour_goes_with_the_code_and_none_means_none():
    assert resolve("Liver#a0B1c2").color == (0xA0, 0xB1, 0xC2)
    assert resolve("-") is None and resolve("none") is None


@pytest.mark.parametrize(("text", "words"), [
    ("Gray", "did you mean GrayMatter"),
    ("SCT:1", "no segmentation property type"),
    ("Tissue/GrayMatter", "not a type of the category Tissue"),
    ("Organ/Liver", "not a segmentation property category"),
    ("Liver#12", "six hex digits"),
])
def test_what_is_not_in_the_context_groups_is_refused_by_name(text, words):
    with pytest.raises(ValueError, match=words):
        resolve(text)


def test_codes_per_label_value_background_optional():
    three = class_codes_from_texts(["GrayMatter", "WhiteMatter"], 3)
    assert three[0] is None and three[1].type.meaning == "Gray Matter"
    assert class_codes_from_texts(["-", "Liver"], 2)[1].type.value == codes.SCT.Liver.value
    assert class_codes_from_texts(None, 3) is None
    with pytest.raises(SettingsError, match="--class-codes: 1 codes for 3 classes"):
        class_codes_from_texts(["Liver"], 3)
    with pytest.raises(SettingsError, match="--class-codes: Spleeen"):
        class_codes_from_texts(["Spleeen"], 2)


def test_palette_colours_by_label_value():
    assert palette_rgb(1) == (0xE6, 0x9F, 0x00) and palette_rgb(2) == (0x56, 0xB4, 0xE9)
    assert palette_rgb(len(PALETTE) + 1) == palette_rgb(1)  # the palette repeats
    coded = resolve("Liver#010203")
    assert class_color(5, coded) == (1, 2, 3) and class_color(5, None) == palette_rgb(5)
    assert class_color(1, resolve("Liver")) == palette_rgb(1)


def test_model_file_entries_are_checked_for_structure_and_standard_schemes():
    good = [None, resolve("Liver#102030").to_dict()]
    assert problem(good) is None
    assert ClassCode.from_dict(good[1]) == resolve("Liver#102030")
    private = {**good[1], "type": {"scheme": "99NAPUNET", "value": "C1", "meaning": "x"}}
    assert "not a standard coding scheme" in problem([None, private])
    long = {**good[1], "type": {**good[1]["type"], "value": "1" * 17}}
    assert "value must be a printable text of 1..16" in problem([long])
    assert "color must be three integers" in problem([{**good[1], "color": [0, 0, 256]}])
    assert "must be an object" in problem([{"type": good[1]["type"]}])
    assert "must be a list" in problem({"0": None})
    assert standard(ClassCode.from_dict(private)) is None
    assert standard(FALLBACK) == FALLBACK
