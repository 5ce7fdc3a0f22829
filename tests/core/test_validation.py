import math

import pytest
import torch

from research_ext.core import (
    check_dtype_floating,
    check_in_range,
    check_int,
    check_one_of,
    check_positive,
    check_probability,
    check_type,
)


def test_check_positive():
    assert check_positive("f", "c", 2.0) == 2.0
    assert check_positive("f", "c", 0, allow_zero=True) == 0
    with pytest.raises(ValueError, match=r"f: `c` must be a finite number > 0, got c=0"):
        check_positive("f", "c", 0)
    with pytest.raises(ValueError, match=r"got c=inf"):
        check_positive("f", "c", math.inf)
    with pytest.raises(ValueError, match=r"must be a finite number >= 0, got c=-1"):
        check_positive("f", "c", -1, allow_zero=True)
    with pytest.raises(TypeError, match=r"got c='1'"):
        check_positive("f", "c", "1")
    with pytest.raises(TypeError, match=r"got c=True"):
        check_positive("f", "c", True)


def test_check_int():
    assert check_int("f", "k", 3, minimum=1) == 3
    with pytest.raises(ValueError, match=r"f: `k` must be a positive int, got k=0"):
        check_int("f", "k", 0, minimum=1)
    with pytest.raises(ValueError, match=r"must be an int in \[1, 5\], got k=6"):
        check_int("f", "k", 6, minimum=1, maximum=5)
    with pytest.raises(ValueError, match=r"must be an int <= 5, got k=6"):
        check_int("f", "k", 6, maximum=5)
    with pytest.raises(ValueError, match=r"must be an int >= 2, got k=1"):
        check_int("f", "k", 1, minimum=2)
    with pytest.raises(TypeError, match=r"must be an int, got k=1.0"):
        check_int("f", "k", 1.0)


def test_check_in_range_and_probability():
    assert check_in_range("f", "x", 1.0, 0.0, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"f: `x` must be a number in \(0.0, 1.0\), got x=1.0"):
        check_in_range("f", "x", 1.0, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    with pytest.raises(ValueError, match=r"got x=nan"):
        check_in_range("f", "x", math.nan, 0.0, 1.0)
    with pytest.raises(TypeError, match=r"got x=None"):
        check_in_range("f", "x", None, 0.0, 1.0)
    assert check_probability("f", "q", 1.0) == 1.0
    with pytest.raises(
        ValueError, match=r"f: `delta` must be a number in \(0.0, 1.0\), got delta=1.0"
    ):
        check_probability("f", "delta", 1.0, allow_one=False)
    with pytest.raises(ValueError, match=r"`q` must be a number in \(0.0, 1.0\], got q=0.0"):
        check_probability("f", "q", 0.0)


def test_check_one_of():
    assert check_one_of("f", "mode", "fwd", ("fwd", "rev")) == "fwd"
    with pytest.raises(ValueError, match=r"f: `mode` must be one of 'fwd', 'rev', got mode='side'"):
        check_one_of("f", "mode", "side", ("fwd", "rev"))
    with pytest.raises(ValueError, match=r"got mode=\[1\]"):
        check_one_of("f", "mode", [1], {"fwd"})


def test_check_type():
    assert check_type("f", "x", 1, int, "an int") == 1
    with pytest.raises(TypeError, match=r"f: `x` must be an int, got x='a'"):
        check_type("f", "x", "a", int, "an int")


def test_check_dtype_floating():
    check_dtype_floating("f", "x", torch.ones(2, dtype=torch.complex64))
    with pytest.raises(
        TypeError, match=r"f: `x` must have a floating or complex dtype, got x.dtype=torch.int64"
    ):
        check_dtype_floating("f", "x", torch.ones(2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"must have a floating dtype, got x.dtype=torch.complex64"):
        check_dtype_floating("f", "x", torch.ones(2, dtype=torch.complex64), complex_ok=False)
