"""The device tests' CUDA settings (checked on any machine: they are flags, not kernels)."""

import warnings

import pytest
import torch

MESSAGE = "adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation"


# A plain "cuda" parameter (not the `device` fixture, so no GPU is needed): the autouse fixture
# of tests/devices/conftest.py reads the parameter's name and value only.
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_cuda_cases_run_in_full_precision_and_warn_on_nondeterminism(device):
    cuda = device == "cuda"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled() == cuda
    assert torch.backends.cudnn.allow_tf32 != cuda
    assert not torch.backends.cuda.matmul.allow_tf32
    if cuda:
        with pytest.warns(UserWarning, match="deterministic"):
            warnings.warn(MESSAGE, UserWarning, stacklevel=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn(MESSAGE, UserWarning, stacklevel=1)  # shown, not raised
        assert len(caught) == 1
    else:
        with pytest.raises(UserWarning, match="deterministic"):
            warnings.warn(MESSAGE, UserWarning, stacklevel=1)
