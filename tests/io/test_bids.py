"""BIDS datasets in: what is a dataset, filters by entity names and keys, which images."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from napari_unet.io.bids import (
    BidsError,
    build_query,
    find_dataset,
    parse_filter_args,
    read_filter_file,
    select_images,
)
from support.bids_data import IMAGES, T1W, bids_dataset, validate


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    root = bids_dataset(tmp_path_factory.mktemp("bids") / "raw")
    # what pybids and BIDS keep out of the data: derivatives, sourcedata, and a stray
    # copy outside any subject folder
    for where in ("derivatives/other/sub-01/anat", "sourcedata/sub-01", "extra/sub-01/anat"):
        (root / where).mkdir(parents=True)
        shutil.copy(root / "sub-01/anat/sub-01_T1w.nii.gz", root / where / "sub-01_T1w.nii.gz")
    return root.resolve()


def _rel(selection) -> list[str]:
    return [i.relpath.removesuffix(".nii.gz") for i in selection.images]


def test_the_test_dataset_is_valid_bids(tmp_path):
    assert validate(bids_dataset(tmp_path / "raw"))["errors"] == []


def test_a_dataset_is_its_root_or_a_subject_folder_or_file_in_it(raw, tmp_path):
    assert find_dataset(raw) == raw
    assert find_dataset(raw / "sub-02" / "ses-1") == raw
    assert find_dataset(raw / "sub-01/anat/sub-01_T1w.nii.gz") == raw
    assert find_dataset(raw / "sourcedata" / "sub-01") is None  # not BIDS data
    assert find_dataset(tmp_path) is None


def test_default_query_takes_the_anatomical_t1w_images(raw):
    assert _rel(select_images(raw, build_query({}))) == sorted(T1W)


@pytest.mark.parametrize(("filters", "expected"), [
    ({"suffix": "T2w"}, [p for p in IMAGES if p.endswith("_T2w")]),
    ({"sub": "02", "ses": "2"}, [p for p in T1W if "ses-2" in p]),
    ({"subject": "02", "session": "2", "run": "2"}, ["sub-02/ses-2/anat/sub-02_ses-2_run-2_T1w"]),
    ({"session": None}, ["sub-01/anat/sub-01_T1w"]),  # null: no session entity
    ({"run": "*"}, [p for p in T1W if "run-" in p]),  # any run, but one
    ({"suffix": ["T1w", "T2w"], "subject": "01"}, ["sub-01/anat/sub-01_T1w",
                                                    "sub-01/anat/sub-01_T2w"]),
])
def test_filters_by_entity_names_and_keys(raw, filters, expected):
    assert _rel(select_images(raw, build_query(filters))) == sorted(expected)


def test_inputs_inside_the_dataset_limit_the_images(raw):
    within = [raw / "sub-02" / "ses-1", raw / "sub-01/anat/sub-01_T1w.nii.gz"]
    assert _rel(select_images(raw, build_query({}), within)) == [
        "sub-01/anat/sub-01_T1w", "sub-02/ses-1/anat/sub-02_ses-1_T1w"]
    assert _rel(select_images(raw, build_query({}), exclude=[raw / "sub-02"])) == [
        "sub-01/anat/sub-01_T1w"]


def test_images_carry_entities_and_their_sidecar_patient_fields_only(raw):
    image = select_images(raw, build_query({"run": "1"})).images[0]
    assert dict(image.entities) == {"subject": "02", "session": "2", "run": "1",
                                    "suffix": "T1w", "datatype": "anat",
                                    "extension": ".nii.gz"}
    assert image.metadata == ()  # EchoTime etc. are not kept


def test_command_line_filters_parse_to_entity_values(tmp_path):
    parsed = parse_filter_args(["suffix=T1w", "session=1,2", "acq = fast"])
    assert parsed == {"suffix": "T1w", "session": ["1", "2"], "acq": "fast"}
    path = tmp_path / "filter.json"
    path.write_text('{"suffix": "T2w", "session": null, "run": 2}')
    assert build_query(read_filter_file(path)) == {
        "datatype": "anat", "suffix": ["T2w"], "extension": [".nii.gz", ".nii"],
        "session": None, "run": ["2"]}
    assert build_query({"extension": "nii"})["extension"] == [".nii"]


@pytest.mark.parametrize(("bad", "words"), [
    (["suffix"], "ENTITY=VALUE"),
    (["suffix="], "no value"),
])
def test_malformed_filters_are_usage_errors(bad, words):
    with pytest.raises(BidsError, match=words):
        parse_filter_args(bad)


def test_unknown_entities_and_values_name_the_problem(tmp_path):
    with pytest.raises(BidsError, match="'sufix' is not a BIDS entity; use one of .*suffix"):
        build_query({"sufix": "T1w"})
    with pytest.raises(BidsError, match="a value, a list of values, null"):
        build_query({"run": {"a": 1}})
    bad = tmp_path / "f.json"
    bad.write_text("[1, 2]")
    with pytest.raises(BidsError, match="JSON object"):
        read_filter_file(bad)
    bad.write_text("{nope")
    with pytest.raises(BidsError, match=f"{bad}: not a readable JSON file"):
        read_filter_file(bad)
