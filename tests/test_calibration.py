"""
Calibration on normals: the score distributions, conformal p-values and thresholds, and the statistical promise -
calibrated on one part of a normal set, the false-positive rate on held-out normals is the target.

The promise is tested the way it is made. Per trial, a random split of the normals gives ``N_CAL`` calibration
cases and one held-out case; the held-out case is flagged with probability exactly ``k / (N_CAL + 1)`` given the
normal set (its rank among the ``N_CAL + 1`` is uniform), whatever the scores are. With ``N_CAL + 1`` a multiple of
``1 / TARGET`` that is the target itself, trials are independent given the set, and the number of flags over
``TRIALS`` trials is Binomial(TRIALS, TARGET): it must fall in that distribution's exact central 95% range. The
scores come from the tiny random backbone: the statistics do not depend on the weights.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.stats import binom

from anomalyclip_med.calibration import (
    MAP_BINS,
    SCORE_BINS,
    CalibratedDecision,
    Calibration,
    CalibrationMismatchError,
    ScoreDistribution,
    binomial_range,
    clopper_pearson,
    operating_point,
)
from anomalyclip_med.errors import InputError
from anomalyclip_med.inference.images2d import image_maps
from anomalyclip_med.inference.options import ScoringOptions
from anomalyclip_med.io.images import read_image
from anomalyclip_med.io.scans import load_volume
from anomalyclip_med.runs.calibrate import scan_levels
from conftest import SHARED_DATA, needs_shared_data, tiny_model
from scan_data import normal_volume
from synthetic_trees import image

TARGET = 0.05
N_CAL = 59  # (N_CAL + 1) * TARGET = 3: the conformal rate is the target exactly
TRIALS = 2000

# measured rates are printed (pytest -s) for docs/calibration.md
MEASURED: dict[str, tuple[int, int, tuple[int, int]]] = {}


@pytest.fixture(scope="module")
def model():
    return tiny_model(56).eval()


def _exact(values: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """The definition: (1 + #normals >= value) / (1 + n)."""
    return (1 + (normals[None, :] >= values[:, None]).sum(1)) / (1 + normals.size)


# ---------------------------------------------------------------- the distribution


def test_p_values_and_threshold_follow_the_definition():
    rng = np.random.default_rng(0)
    normals = rng.beta(2, 30, 500)  # concentrated near 0.06, as untrained models score
    dist = ScoreDistribution().update(normals)
    assert dist.n == 500 and len(np.unique(dist.bin_of(normals))) == 500  # no two normals share a bin here
    probe = np.concatenate([rng.beta(2, 30, 300), normals[:50], [0.0, 1.0]])
    # at bin resolution "at least as high" counts the normals of the probe's own bin too: equal unless one shares it
    shared = np.isin(dist.bin_of(probe), dist.bin_of(normals)) & ~np.isin(probe, normals)
    np.testing.assert_allclose(dist.p_values(probe)[~shared], _exact(probe, normals)[~shared])
    assert (dist.p_values(probe)[shared] >= _exact(probe, normals)[shared]).all()  # conservative
    assert dist.p_values([1.0])[0] == pytest.approx(1 / 501)  # above every normal: never 0
    for fpr in (0.01, 0.05, 0.2):
        t = dist.threshold(fpr)
        flagged = dist.p_values(probe) <= fpr
        np.testing.assert_array_equal(flagged, probe.astype(np.float32) >= np.float32(t))
        # a normal counts itself: the r-th highest has p = (1 + r) / (n + 1)
        assert (dist.p_values(normals) <= fpr).sum() == int(np.floor(fpr * 501)) - 1
    assert ScoreDistribution().update(normals[:10]).threshold(0.05) is None  # 10 normals cannot reach p <= 0.05


def test_merge_equals_one_pass_and_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    parts = [rng.random(n) for n in (10, 0, 300, 57)]
    whole = ScoreDistribution(MAP_BINS).update(np.concatenate(parts))
    merged = ScoreDistribution(MAP_BINS)
    for values in parts:
        merged.merge(ScoreDistribution(MAP_BINS).update(values))
    np.testing.assert_array_equal(merged.index, whole.index)
    np.testing.assert_array_equal(merged.count, whole.count)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    back = ScoreDistribution.from_dict(json.loads(json.dumps(whole.to_dict())))
    np.testing.assert_array_equal(back.p_values(parts[2]), whole.p_values(parts[2]))
    with pytest.raises(ValueError, match="outside"):
        ScoreDistribution().update([0.5, float("nan")])


def test_calibration_file_refusals(tmp_path, model):
    cal = Calibration.empty("scans", model.identity(), ScoringOptions())
    cal.add_case(np.full(100, 0.3, np.float32), np.array([0.1, 0.2]), 0.15)
    path = cal.save(tmp_path / "c.json")
    loaded = Calibration.load(path)
    assert loaded.counts == {"cases": 1, "slices": 2, "voxels": 100} and loaded.sha256
    loaded.check("scans", model.identity(), ScoringOptions(batch_size=3, threshold=0.9))  # no score changes
    with pytest.raises(CalibrationMismatchError, match=r"scoring\.z_smooth: calibrated with 0\.0, this run has 2\.0"):
        loaded.check("scans", model.identity(), ScoringOptions(z_smooth=2.0))
    with pytest.raises(CalibrationMismatchError, match=r"model\.config\.image_size: calibrated with 56, this run has "
                                                       r"112"):
        loaded.check("scans", tiny_model(112).identity(), ScoringOptions())
    with pytest.raises(CalibrationMismatchError, match="made on scans, but this run scores images"):
        loaded.check("images", model.identity())
    bad = tmp_path / "bad.json"
    bad.write_text(path.read_text().replace('"n": 2', '"n": 3'))
    with pytest.raises(InputError, match="bad.json' is not a valid calibration file: the counts sum to 2"):
        Calibration.load(bad)


def test_clopper_pearson_and_operating_point():
    lo, hi = clopper_pearson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))  # the exact bound without events
    lo, hi = clopper_pearson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 20))
    op = operating_point([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0], 0.05)
    assert (op["sensitivity"], op["fpr"], op["true_positives"], op["false_positives"]) == (2 / 3, 1 / 4, 2, 1)
    assert op["sensitivity_ci"][0] < 2 / 3 < op["sensitivity_ci"][1]
    for n, p in ((2000, 0.05), (41, 0.05), (300, 0.5)):
        lo, hi = binomial_range(n, p)  # the tightest range whose each tail outside holds at most 2.5%
        assert binom.cdf(lo - 1, n, p) <= 0.025 < binom.cdf(lo, n, p)
        assert binom.sf(hi, n, p) <= 0.025 < binom.sf(hi - 1, n, p)


# ---------------------------------------------------------------- the statistical promise


def _flag_trials(levels: dict[str, list[np.ndarray]], trials: int = TRIALS, seed: int = 0) -> dict[str, int]:
    """``levels``: per level, one array of values per normal case. Per trial: calibrate on N_CAL random cases, flag
    one value of one held-out case with :class:`CalibratedDecision` at TARGET. Returns the flags per level."""
    rng = np.random.default_rng(seed)
    n_cases = len(next(iter(levels.values())))
    flags = dict.fromkeys(levels, 0)
    for _ in range(trials):
        order = rng.permutation(n_cases)
        cal, held = order[:N_CAL], order[N_CAL]
        dists = {level: ScoreDistribution(MAP_BINS if level in ("voxel", "pixel") else SCORE_BINS).update(
            np.concatenate([values[i] for i in cal])) for level, values in levels.items()}
        kind = "scans" if "scan" in levels else "images"
        decision = CalibratedDecision(Calibration(kind, {}, {}, dists), TARGET)
        for level, values in levels.items():
            probe = values[held][rng.integers(len(values[held]))]
            flags[level] += bool(decision.flags(level, [probe])[0])
    return flags


def _assert_binomial(name: str, flags: dict[str, int]) -> None:
    lo, hi = binomial_range(TRIALS, TARGET)
    for level, k in flags.items():
        MEASURED[f"{name}/{level}"] = (k, TRIALS, (lo, hi))
        print(f"{name} {level}: {k} of {TRIALS} held-out normals flagged = {k / TRIALS:.4f} (target {TARGET}, exact "
              f"95% range {lo}-{hi} = {lo / TRIALS:.4f}-{hi / TRIALS:.4f})")
        assert lo <= k <= hi, f"{name} {level}: {k} flags of {TRIALS} outside the Binomial 95% range [{lo}, {hi}]"


def _image_levels(model, paths) -> dict[str, list[np.ndarray]]:
    scores, pixels = [], []
    for start in range(0, len(paths), 16):
        for score, amap in image_maps(model, [read_image(p) for p in paths[start:start + 16]]):
            scores.append(np.array([score]))
            pixels.append(amap[::4, ::4].ravel())  # every 16th pixel: the trials need a probe, not every pixel
    return {"image": scores, "pixel": pixels}


def test_false_positive_rate_on_synthetic_normal_images(model, tmp_path):
    paths = [image(tmp_path / f"{i:03d}.png", size=(48, 40), seed=i) for i in range(90)]
    _assert_binomial("synthetic images", _flag_trials(_image_levels(model, paths)))


@needs_shared_data
@pytest.mark.parametrize("name", ["HeadCT", "BrainMRI"])
def test_false_positive_rate_on_real_normal_images(model, name):
    if name == "HeadCT":
        folder = SHARED_DATA / "HeadCT" / "Dataset"
        with open(folder / "labels.csv", newline="") as f:
            normal_ids = [int(r[0]) for r in list(csv.reader(f))[1:] if int(r[1]) == 0]
        paths = [folder / "head_ct" / f"{i:03d}.png" for i in normal_ids]
    else:
        paths = sorted((SHARED_DATA / "BrainMRI" / "no").iterdir())
    assert len(paths) >= 90
    # only the image level: the pixels of one real image are far from independent of each other
    levels = _image_levels(model, paths)
    _assert_binomial(f"{name} normals", _flag_trials({"image": levels["image"]}))


def test_false_positive_rate_on_synthetic_normal_volumes(model, tmp_path):
    options = ScoringOptions(preset="brain", batch_size=8)
    levels: dict[str, list[np.ndarray]] = {"voxel": [], "slice": [], "scan": []}
    for i in range(80):
        # what calibrate takes from each scan: body voxels of scored slices, scored slices, the scan score
        voxels, slices, scan_score = scan_levels(model, load_volume(normal_volume(tmp_path / f"n{i:02d}.nii.gz", i)),
                                                 options)
        # every slice holds body; the body (an ellipse over ~44% of each slice) bounds the voxels counted
        assert slices.size == 8 and 0.35 * 8 * 40 * 40 < voxels.size < 0.55 * 8 * 40 * 40
        levels["voxel"].append(voxels[::9])
        levels["slice"].append(slices)
        levels["scan"].append(np.array([scan_score]))
    _assert_binomial("synthetic volumes", _flag_trials(levels, seed=1))
