import numpy as np
import pytest
import torch

from research_ext.core import from_numpy, to_numpy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128, torch.int32])
def test_to_numpy_shares_memory_on_cpu(dtype):
    t = torch.zeros(4, dtype=dtype)
    a = to_numpy(t)
    assert np.shares_memory(a, t.numpy())
    a[1] = 3
    assert t[1].item() == 3


def test_to_numpy_copies_when_it_must():
    t = torch.ones(3, requires_grad=True)
    a = to_numpy(t)
    np.testing.assert_array_equal(a, np.ones(3))
    c = torch.tensor([1 + 2j]).conj()
    assert to_numpy(c)[0] == 1 - 2j
    bf = torch.ones(2, dtype=torch.bfloat16)
    assert to_numpy(bf).dtype == np.float32


def test_to_numpy_non_contiguous():
    t = torch.arange(12.0).reshape(3, 4).T
    np.testing.assert_array_equal(to_numpy(t), t.contiguous().numpy())


def test_from_numpy_zero_copy_and_conversions():
    a = np.arange(4.0)
    t = from_numpy(a)
    assert np.shares_memory(a, t.numpy())
    t32 = from_numpy(a, dtype=torch.float32)
    assert t32.dtype == torch.float32 and t32.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert from_numpy([1, 2]).tolist() == [1, 2]


def test_from_numpy_negative_strides_and_readonly():
    a = np.arange(5.0)[::-1]
    assert from_numpy(a).tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    ro = np.arange(3.0)
    ro.flags.writeable = False
    assert from_numpy(ro).tolist() == [0.0, 1.0, 2.0]


def test_errors():
    with pytest.raises(
        TypeError, match=r"to_numpy: `tensor` must be a torch.Tensor, got tensor='list'"
    ):
        to_numpy([1, 2])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"from_numpy: `array.dtype` must be a numeric numpy dtype, got array.dtype='<U1'",
    ):
        from_numpy(np.array(["a"]))
