"""Bland–Altman agreement: the numbers by hand, the refusals, and the figure."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest

from neurofed.evaluate.figures import bland_altman_plot
from neurofed.evaluate.statistics import LIMITS_Z, bland_altman


def test_bias_sd_and_limits_of_agreement_by_hand() -> None:
    # Prepare: differences predicted − true = 3, -1, 4, 0, -1
    predicted = [63.0, 41.0, 74.0, 55.0, 29.0]
    truth = [60.0, 42.0, 70.0, 55.0, 30.0]
    bias = (3 - 1 + 4 + 0 - 1) / 5  # 1.0
    sd = math.sqrt((4 + 4 + 9 + 1 + 4) / (5 - 1))  # squared deviations from the bias; n - 1

    # Execute
    result = bland_altman(predicted, truth)

    # Assert
    assert result.n == 5
    assert result.bias == pytest.approx(bias) == 1.0
    assert result.sd == pytest.approx(sd) == pytest.approx(math.sqrt(5.5))
    assert result.lower == pytest.approx(1.0 - 1.96 * sd)
    assert result.upper == pytest.approx(1.0 + 1.96 * sd)
    assert LIMITS_Z == 1.96
    assert result.to_json() == {
        "bias": 1.0,
        "sd": 2.345208,
        "limits": [round(1.0 - 1.96 * sd, 6), round(1.0 + 1.96 * sd, 6)],
        "n": 5,
    }


def test_perfect_agreement_has_zero_bias_and_collapsed_limits() -> None:
    result = bland_altman([50.0, 60.0, 70.0], [50.0, 60.0, 70.0])
    assert (result.bias, result.sd, result.lower, result.upper) == (0.0, 0.0, 0.0, 0.0)


def test_a_constant_offset_is_all_bias() -> None:
    truth = np.array([30.0, 45.0, 62.0, 80.0])
    result = bland_altman(truth + 5.0, truth)
    assert result.bias == pytest.approx(5.0) and result.sd == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("predicted", "truth", "message"),
    [
        ([61.0], [60.0], "at least 2 cases for limits of agreement; got 1"),
        ([], [], "at least 2 cases for limits of agreement; got 0"),
        ([61.0, 50.0, 40.0], [60.0, 52.0], "3 predictions for 2 true values"),
        ([61.0, math.nan], [60.0, 52.0], "every per-case value must be a finite number"),
    ],
    ids=["one-case", "no-case", "unpaired", "nan"],
)
def test_too_few_or_unpaired_values_are_refused_with_the_count(
    predicted: list[float], truth: list[float], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        bland_altman(predicted, truth)
    assert message in str(caught.value)


def _png_size(uri: str) -> tuple[int, int]:
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(uri.removeprefix(prefix)))) as image:
        return image.size


def test_the_figure_is_two_panels_wide_for_several_sites_and_for_one_case() -> None:
    # Prepare: two sites, and a site with one case (no limits can be drawn from it alone)
    rng = np.random.default_rng(0)
    truth = rng.uniform(20, 80, 12)
    sites = {
        "site-1 (n=6)": (list(truth[:6] + rng.normal(0, 4, 6)), list(truth[:6])),
        "site-2 (n=6)": (list(truth[6:] + 3.0), list(truth[6:])),
    }

    # Execute
    several = bland_altman_plot(sites, "age")
    single = bland_altman_plot({"site-3 (n=1)": ([55.0], [50.0])}, "sdmt")

    # Assert: 9 × 3.8 inches at 110 dpi, whatever the points
    assert _png_size(several) == _png_size(single) == (990, 418)
