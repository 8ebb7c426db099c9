"""Fine-tuning from corrections: only trusted labels count, the input model never changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.errors import Cancelled, TaskError
from napari_unet.training import finetune, train
from support.synthetic import TINY, blobs, falls

FT = dict(patch_size=(32, 32), batch_size=4, seed=3)
# bit-for-bit comparisons of two runs mean the CPU (CUDA repeats only in deterministic mode)
EXACT = dict(FT, device="cpu")


@pytest.fixture(scope="module")
def base_model():
    img, lab = blobs(10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(img, lab, iterations=15, **TINY).model
    finally:
        torch.set_num_threads(threads)


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_untrusted_slices_have_no_influence(base_model):
    img, lab = blobs(11)
    trusted = np.array([True, False, True, False, False, False])
    garbage = [lab.copy(), lab.copy()]
    garbage[0][~trusted] = 2
    garbage[1][~trusted] = 77  # not even a valid class: untrusted labels are never read
    runs = [finetune(base_model, img, g, trusted, iterations=6, **EXACT) for g in garbage]
    assert _same(_weights(runs[0].model), _weights(runs[1].model))
    honest = finetune(base_model, img, lab, np.ones(6, bool), iterations=6, **EXACT)
    assert not _same(_weights(runs[0].model), _weights(honest.model))


def test_untrusted_voxels_have_no_influence(base_model):
    img, lab = blobs(12)
    trusted = np.zeros(lab.shape, bool)
    trusted[:, :, :24] = True  # the left half of every slice was checked
    a, b = lab.copy(), lab.copy()
    a[~trusted] = 0
    b[~trusted] = 1
    runs = [finetune(base_model, img, g, trusted, iterations=6, **EXACT) for g in (a, b)]
    assert _same(_weights(runs[0].model), _weights(runs[1].model))


def test_returns_a_new_model_and_leaves_the_input_alone(base_model):
    img, lab = blobs(13)
    before = _weights(base_model)
    parent_hash = base_model.hash
    trusted = np.array([True, True, False, False, True, False])
    seen = []
    res = finetune(base_model, img, lab, trusted, iterations=30, lr=1e-3,
                   progress=lambda d, t: seen.append((d, t)), **FT)
    assert _same(before, _weights(base_model)) and base_model.hash == parent_hash
    assert res.model is not base_model and res.model.net is not base_model.net
    prov = res.model.meta.provenance
    assert prov["parent"] == {"name": base_model.name, "hash": parent_hash}
    assert prov["corrected_slices"] == 3 and prov["finetune"]["iterations"] == 30
    assert res.model.hash != parent_hash
    assert falls(res.losses)
    assert set(res.metrics) == {"trusted_dice_before", "trusted_dice"}
    assert seen[-1] == (30, 30)


def test_time_budget_and_cancel(base_model):
    img, lab = blobs(14)
    res = finetune(base_model, img, lab, np.ones(6, bool), time_budget=0.5, **FT)
    assert res.stopped_by == "time_budget" and res.iterations >= 1
    with pytest.raises(Cancelled):
        finetune(base_model, img, lab, np.ones(6, bool), iterations=20, cancel=lambda: True,
                 **FT)


def test_bad_trust_and_tasks_are_refused(base_model):
    img, lab = blobs(15)
    with pytest.raises(TaskError, match="nothing is marked"):
        finetune(base_model, img, lab, np.zeros(6, bool), iterations=1)
    with pytest.raises(TaskError, match="6 slices along axis 0"):
        finetune(base_model, img, lab, np.ones(5, bool), iterations=1)
    bad = lab.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(TaskError, match="labels must be integers"):
        finetune(base_model, img, bad, np.ones(6, bool), iterations=1)
    den = train(img, task="denoise", iterations=1, **TINY).model
    with pytest.raises(TaskError, match="segmentation model"):
        finetune(den, img, lab, np.ones(6, bool), iterations=1)
