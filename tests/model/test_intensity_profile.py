"""The training intensity profile a model file records: measured like independent tools
measure it, stored checked and hashed, stamped onto files without touching the weights."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_unet.errors import ModelFileError
from napari_unet.model import intensity_profile as P
from napari_unet.model.checkpoint import load_model, read_header, stamp_intensity_profile
from napari_unet.model.normalize import Normalization
from support.tiny_models import tiny_model

NORM = Normalization("percentile", 0.5, 99.5)


def _phantom(seed: int = 0, gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two tissues inside air, and their labels (1 ring, 2 core)."""
    z, y, x = np.mgrid[:10, :40, :40].astype(np.float32)
    r2 = (y - 20) ** 2 + (x - 20) ** 2
    labels = np.where(r2 < 80, 2, np.where(r2 < 300, 1, 0)).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = np.choose(labels, [0.0, 500.0, 800.0]) + rng.normal(0, 20, labels.shape)
    image = 1000 * (np.clip(image, 0, None) / 1000) ** gamma
    return image.astype(np.float32), labels


def _normalised(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / (hi - lo), 0, 1)


def test_quantiles_are_those_of_the_signal_above_otsu():
    from skimage.filters import threshold_otsu

    image, labels = _phantom()
    scan = P.scan_profile(image, NORM, labels, 3)
    x = _normalised(image).reshape(-1)
    signal = x > threshold_otsu(x)
    # (the minimum, level 0, sits on the threshold itself: left out)
    np.testing.assert_allclose(scan.quantiles[1:], np.quantile(x[signal], P.LEVELS)[1:],
                               atol=0.02)
    assert scan.voxels == pytest.approx(signal.sum(), rel=0.02)
    core = x[signal & (labels.reshape(-1) == 2)]
    np.testing.assert_allclose(scan.classes[2][1:], np.quantile(core, P.LEVELS)[1:],
                               atol=0.02)


def test_otsu_agrees_with_scikit_image():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.2, 0.05, 5000), rng.normal(0.7, 0.1, 3000)])
    assert P.otsu(x) == pytest.approx(threshold_otsu(x), abs=(x.max() - x.min()) / 128)


def test_distance_is_the_wasserstein_distance_to_the_nearest_training_scan():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 0.1, 20000), rng.normal(0.65, 0.15, 20000)
    qa, qb = (tuple(np.quantile(v, P.LEVELS)) for v in (a, b))
    # the quantile grid leaves out the tails beyond 0 / 100 %: a few percent of error
    assert P.w1(qa, qb) == pytest.approx(wasserstein_distance(a, b), rel=0.05)
    near, far = P.ScanProfile(qa, 100), P.ScanProfile(tuple(v + 0.3 for v in qa), 100)
    prof = P.IntensityProfile((far, near))
    assert P.distance(prof, P.ScanProfile(qb, 100)) == pytest.approx(P.w1(qa, qb))


def test_a_gamma_moves_a_scan_away_and_a_rescale_does_not():
    image, labels = _phantom()
    prof = P.profile_of([image], NORM, [labels], 3)
    rescaled = P.scan_profile(image * 1000 + 5, NORM)
    assert P.distance(prof, rescaled) < 1e-3  # the normalisation takes scale and offset
    gamma = P.scan_profile(_phantom(gamma=0.5)[0], NORM)
    assert P.distance(prof, gamma) > 0.05


def test_noise_reading_is_sigma_in_the_models_normalised_units():
    z, y, x = np.mgrid[:16, :64, :64].astype(np.float32)
    smooth = 300 + 3 * x + 2 * y  # smooth anatomy: the high-pass cancels it
    smooth[:, :, :12] = 0.0  # air
    rng = np.random.default_rng(1)
    for share in (0.01, 0.02, 0.04):
        noisy = smooth + share * 500 * rng.standard_normal(smooth.shape)
        lo, hi = np.percentile(noisy, [0.5, 99.5])  # the model's normalisation
        sigma = share * 500 / (hi - lo)
        assert P.noise_level(noisy, NORM) == pytest.approx(sigma, rel=0.15)


def test_merging_keeps_each_scan_once_and_at_most_max_scans():
    image, labels = _phantom()
    one = P.profile_of([image], NORM, [labels], 3)
    assert len(one.merged(one).scans) == 1  # the same scan again: kept once
    other = P.profile_of([_phantom(gamma=0.6)[0]], NORM)
    both = one.merged(other)
    assert len(both.scans) == 2
    many = P.IntensityProfile(tuple(P.ScanProfile(tuple(np.linspace(0, 1, 21) ** (1 + k / 10)),
                                                  100) for k in range(P.MAX_SCANS + 5)))
    capped = P.IntensityProfile(P._capped(many.scans))
    assert len(capped.scans) == P.MAX_SCANS
    assert sum(s.scans for s in capped.scans) == P.MAX_SCANS + 5  # merged, none lost


def test_a_model_file_carries_its_profile_in_its_hash(tmp_path):
    image, labels = _phantom()
    model = tiny_model("segment", n_classes=3)
    plain_hash = model.hash
    prof = P.profile_of([image], model.meta.normalization, [labels], 3)
    model.meta = replace(model.meta, intensity_profile=prof, hash="")
    assert model.hash != plain_hash  # it changes the results' scores: the hash covers it
    path = model.save(tmp_path / "m.safetensors")
    loaded = load_model(path, device="cpu")
    assert loaded.hash == model.hash
    assert loaded.meta.intensity_profile.to_dict() == prof.to_dict()
    old = tiny_model("segment", n_classes=3).save(tmp_path / "old.safetensors")
    assert "intensity_profile" not in read_header(old)  # files without it stay as they were
    assert load_model(old, device="cpu").meta.intensity_profile is None


def test_stamping_changes_only_the_profile_and_the_hash(tmp_path):
    from safetensors.torch import load_file

    image, labels = _phantom()
    model = tiny_model("segment", n_classes=3)
    path = model.save(tmp_path / "m.safetensors", trained_on="phantom")
    before, weights = read_header(path), load_file(str(path))
    prof = P.profile_of([image], model.meta.normalization, [labels], 3)
    meta = stamp_intensity_profile(path, prof)
    after = read_header(path)
    assert after["intensity_profile"] == prof.to_dict() and after["hash"] == meta.hash
    drop = ("intensity_profile", "hash")
    assert {k: v for k, v in after.items() if k not in drop} == {
        k: v for k, v in before.items() if k not in drop}
    for key, tensor in load_file(str(path)).items():
        assert tensor.equal(weights[key])
    assert load_model(path, device="cpu").hash == meta.hash != before["hash"]


@pytest.mark.parametrize("change, field", [
    (lambda p: p["scans"][0]["quantiles"].reverse(), "non-decreasing"),
    (lambda p: p["scans"][0]["quantiles"].pop(), "21 finite"),
    (lambda p: p["scans"][0].update(quantiles=[float("nan")] * 21), "21 finite"),
    (lambda p: p.update(secret="x"), "must be an object of"),
    (lambda p: p.update(levels=11), "quantiles at 21 levels"),
    (lambda p: p.update(scans=[]), "1 to 32 scans"),
    (lambda p: p["scans"][0].update(voxels=0), "integers >= 1"),
    (lambda p: p.update(noise_added=[0.5, 0.1]), "noise_added"),
])
def test_a_bad_profile_in_a_file_is_refused(tmp_path, change, field):
    from safetensors import safe_open
    from safetensors.torch import save_file

    image, labels = _phantom()
    model = tiny_model("segment", n_classes=3)
    model.meta = replace(model.meta, intensity_profile=P.profile_of(
        [image], model.meta.normalization, [labels], 3))
    path = model.save(tmp_path / "m.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["napari_unet"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(meta["intensity_profile"])
    save_file(tensors, str(path), metadata={"napari_unet": json.dumps(meta)})
    with pytest.raises(ModelFileError, match=f"intensity_profile.*{field}"):
        load_model(path, device="cpu")


def test_info_says_what_the_model_learned_from(tmp_path):
    from napari_unet.cli.main import main
    from support.cli_run import run_cli

    image, labels = _phantom()
    model = tiny_model("segment", n_classes=3)
    plain = model.save(tmp_path / "plain.safetensors")
    model.meta = replace(model.meta, intensity_profile=P.profile_of(
        [image], model.meta.normalization, [labels], 3))
    path = model.save(tmp_path / "m.safetensors")
    code, out = run_cli("info", path)
    q = model.meta.intensity_profile.scans[0].quantiles
    assert code == 0 and ("intensities:   1 training scan; normalised signal 5th / 50th / "
                          f"95th percentiles {q[1]:.2f} / {q[10]:.2f} / {q[19]:.2f}") in out
    code, out = run_cli("info", plain)
    assert "intensities:   not recorded" in out
    assert main(["info", "--json", str(path)]) == 0
