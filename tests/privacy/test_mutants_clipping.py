"""Per-sample clipping pinned exactly: thresholds, factors, grouping, the count query, errors.

Written from a mutation-testing pass over ``research_ext/privacy/_clipping.py`` (see
``tools/mutation.sh``): each test fixes a value that a plausible slip in the code would change
(a threshold split as C / K instead of C / sqrt(K), a ``<`` for ``<=`` at the clipping boundary,
a layer grouped by its first dot instead of its last, ...).
"""

import math
import re

import pytest
import torch

from research_ext.privacy import clip_per_sample
from research_ext.privacy._clipping import (
    COUNT_SENSITIVITY,
    centred_unclipped_count,
    clip_factors,
    layer_thresholds,
    sensitivity,
)
from tests.helpers import ATOL_FLOAT64, RTOL_FLOAT64

EXACT = {"rtol": RTOL_FLOAT64, "atol": ATOL_FLOAT64}
APPROX = {"rel": RTOL_FLOAT64, "abs": ATOL_FLOAT64}


def test_layer_thresholds_of_a_float():
    groups = ["a", "b", "c", "d"]
    assert layer_thresholds("f", 2.0, groups, "flat") == dict.fromkeys(groups, 2.0)
    assert layer_thresholds("f", 2.0, groups, "adaptive") == dict.fromkeys(groups, 2.0)
    # per layer: C / sqrt(K), so that sum C_k^2 = C^2
    assert layer_thresholds("f", 2.0, groups, "per_layer") == dict.fromkeys(groups, 1.0)
    assert layer_thresholds("f", 3, ["x"], "per_layer") == {"x": 3.0}


def test_layer_thresholds_of_a_mapping():
    out = layer_thresholds("f", {"a": 1, "b": 0.5, "unused": 9.0}, ["a", "b"], "per_layer")
    assert out == {"a": 1.0, "b": 0.5}
    assert all(type(v) is float for v in out.values())


def test_layer_threshold_errors_name_the_function_and_the_argument():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "g: `max_grad_norm` must be a float unless clipping='per_layer', "
            "got max_grad_norm={'a': 1.0}"
        ),
    ):
        layer_thresholds("g", {"a": 1.0}, ["a"], "flat")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "g: `max_grad_norm` must be a threshold for every layer group, "
            "got max_grad_norm={'a': 1.0}; missing ['b', 'c']"
        ),
    ):
        layer_thresholds("g", {"a": 1.0}, ["a", "b", "c"], "per_layer")
    with pytest.raises(ValueError, match=re.escape("g: `max_grad_norm['b']` must be")):
        layer_thresholds("g", {"a": 1.0, "b": 0.0}, ["a", "b"], "per_layer")
    with pytest.raises(ValueError, match=re.escape("g: `max_grad_norm` must be")):
        layer_thresholds("g", -1.0, ["a"], "flat")


def test_sensitivity_per_mode():
    assert sensitivity({"a": 3.0, "b": 4.0}, "per_layer") == pytest.approx(5.0, **APPROX)
    assert sensitivity({"a": 3.0, "b": 4.0}, "flat") == 4.0
    assert sensitivity({"a": 3.0, "b": 4.0}, "adaptive") == 4.0
    assert sensitivity({}, "flat") == 0.0
    assert sensitivity({}, "per_layer") == 0.0


def test_centred_count_counts_norms_at_most_c_including_the_boundary():
    # total norms over the two groups: 5 (= C), 5.000001 (> C), 0, 13
    sq = {
        "a": torch.tensor([9.0, 9.0, 0.0, 25.0], dtype=torch.float64),
        "b": torch.tensor([16.0, 16.00001, 0.0, 144.0], dtype=torch.float64),
    }
    count = centred_unclipped_count(sq, 5.0)
    assert count.ndim == 0 and count.dtype == torch.float64
    # two unclipped (+1/2 each), two clipped (-1/2 each)
    assert count.item() == 0.0
    assert centred_unclipped_count(sq, 6.0).item() == 1.0  # three in, one out
    assert centred_unclipped_count(sq, 13.0).item() == 2.0  # 13 itself is in
    assert centred_unclipped_count(sq, 0.5).item() == -1.0  # one in (the zero), three out
    assert centred_unclipped_count(sq, 100.0).item() == 4 * COUNT_SENSITIVITY
    # a tiny negative rounding error in a squared norm counts as zero, not nan
    assert centred_unclipped_count({"a": torch.tensor([-1e-12])}, 1.0).item() == 0.5


def test_flat_factors_are_c_over_the_total_norm_plus_tiny():
    sq = {
        "a": torch.tensor([9.0, 0.0, 0.25, -1e-12], dtype=torch.float64),
        "b": torch.tensor([16.0, 0.0, 0.0, 0.0], dtype=torch.float64),
    }
    factors = clip_factors(sq, {"a": 2.0, "b": 2.0}, "flat")
    assert set(factors) == {"a", "b"} and factors["a"] is factors["b"]
    expected = torch.tensor([2.0 / (5.0 + 1e-6), 1.0, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(factors["a"], expected, **EXACT)
    assert factors["a"][1].item() == 1.0  # zero gradient: factor exactly 1, no division by zero
    # at the threshold the factor is C / (C + 1e-6), just below 1
    at = clip_factors({"a": torch.tensor([4.0], dtype=torch.float64)}, {"a": 2.0}, "adaptive")
    assert at["a"].item() == pytest.approx(2.0 / (2.0 + 1e-6), **APPROX)
    assert at["a"].item() < 1.0


def test_per_layer_factors_use_each_layers_norm_and_threshold():
    sq = {
        "a": torch.tensor([9.0, 0.01], dtype=torch.float64),
        "b": torch.tensor([16.0, 16.0], dtype=torch.float64),
    }
    factors = clip_factors(sq, {"a": 1.0, "b": 8.0}, "per_layer")
    torch.testing.assert_close(
        factors["a"], torch.tensor([1.0 / (3.0 + 1e-6), 1.0], dtype=torch.float64), **EXACT
    )
    torch.testing.assert_close(factors["b"], torch.ones(2, dtype=torch.float64), **EXACT)


def test_clip_per_sample_groups_parameters_by_their_module_prefix():
    # "enc.0.weight" and "enc.0.bias" share the layer "enc.0"; "enc.1.weight" is another;
    # a name without a dot is its own group.
    grads = {
        "enc.0.weight": torch.tensor([[3.0, 0.0], [0.3, 0.0]], dtype=torch.float64),
        "enc.0.bias": torch.tensor([[4.0], [0.4]], dtype=torch.float64),
        "enc.1.weight": torch.tensor([[0.0, 12.0], [0.0, 0.0]], dtype=torch.float64),
        "scale": torch.tensor([[0.0], [2.0]], dtype=torch.float64),
    }
    thresholds = {"enc.0": 1.0, "enc.1": 6.0, "": 1.0}
    out = clip_per_sample(grads, thresholds, "per_layer")
    assert list(out) == list(grads)
    f0 = 1.0 / (5.0 + 1e-6)  # the norm of enc.0 over weight and bias together
    torch.testing.assert_close(
        out["enc.0.weight"], torch.tensor([[3.0 * f0, 0.0], [0.3, 0.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        out["enc.0.bias"], torch.tensor([[4.0 * f0], [0.4]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        out["enc.1.weight"],
        torch.tensor([[0.0, 12.0 * 6.0 / (12.0 + 1e-6)], [0.0, 0.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(
        out["scale"], torch.tensor([[0.0], [2.0 / (2.0 + 1e-6)]], dtype=torch.float64)
    )


def test_flat_clipping_uses_the_norm_over_all_parameters():
    grads = {
        "l1.weight": torch.tensor([[3.0], [0.0]], dtype=torch.float64),
        "l2.weight": torch.tensor([[4.0], [0.5]], dtype=torch.float64),
    }
    out = clip_per_sample(grads, 1.0)
    f = 1.0 / (5.0 + 1e-6)
    torch.testing.assert_close(out["l1.weight"], torch.tensor([[3.0 * f], [0.0]]).double())
    torch.testing.assert_close(out["l2.weight"], torch.tensor([[4.0 * f], [0.5]]).double())
    # per layer with a float C: C / sqrt(2) per layer
    out = clip_per_sample(grads, 1.0, "per_layer")
    c = 1.0 / math.sqrt(2.0)
    torch.testing.assert_close(
        out["l1.weight"], torch.tensor([[3.0 * c / (3.0 + 1e-6)], [0.0]]).double()
    )
    torch.testing.assert_close(
        out["l2.weight"], torch.tensor([[4.0 * c / (4.0 + 1e-6)], [0.5]]).double()
    )


def test_clip_per_sample_keeps_shapes_and_dtypes_of_high_rank_gradients():
    g = torch.zeros(3, 2, 2, 2, dtype=torch.float32)
    g[0] = 1.0  # norm sqrt(8)
    g[1, 0, 0, 0] = 0.5
    g[2, 1, 1, 1] = -10.0
    out = clip_per_sample({"conv.weight": g, "conv.bias": torch.zeros(3, 2)}, 2.0)
    w = out["conv.weight"]
    assert w.shape == g.shape and w.dtype == torch.float32
    norms = w.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([2.0, 0.5, 2.0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w[1], g[1])  # below the threshold: unchanged
    assert w[2, 1, 1, 1].item() < 0  # the direction is kept
    assert out["conv.bias"].shape == (3, 2)


def test_clip_per_sample_keeps_each_dtype_within_a_mixed_precision_layer():
    # the layer's norm is taken over both (in float64); each gradient keeps its own dtype
    grads = {
        "l.weight": torch.tensor([[3.0]], dtype=torch.float32),
        "l.bias": torch.tensor([[4.0]], dtype=torch.float64),
    }
    out = clip_per_sample(grads, 1.0)
    assert out["l.weight"].dtype == torch.float32 and out["l.bias"].dtype == torch.float64
    torch.testing.assert_close(out["l.weight"], torch.tensor([[0.6]]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["l.bias"], torch.tensor([[0.8]], dtype=torch.float64))


def test_clip_per_sample_half_precision_is_scaled_in_its_own_dtype():
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.bfloat16)
    out = clip_per_sample({"w": g}, 1.0)["w"]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float()[0], torch.tensor([0.6, 0.8]), rtol=1e-2, atol=1e-2)


def test_clip_per_sample_of_nothing_and_errors():
    assert clip_per_sample({}, 1.0) == {}
    with pytest.raises(ValueError, match=r"clip_per_sample: `clipping` must be one of"):
        clip_per_sample({"w": torch.ones(1, 1)}, 1.0, "global")
    with pytest.raises(TypeError, match=r"clip_per_sample: `max_grad_norm` must be a float"):
        clip_per_sample({"w": torch.ones(1, 1)}, {"": 1.0})
    with pytest.raises(ValueError, match=r"missing \['l'\]"):
        clip_per_sample({"l.w": torch.ones(1, 1)}, {"x": 1.0}, "per_layer")
