"""DP-SGD: per-sample gradient clipping, noise, Poisson sampling and privacy accounting.

Example:
    >>> import research_ext.privacy as rp
    >>> rp.epsilon(1.0, 0.01, 1000, 1e-5, accountant="rdp") > rp.epsilon(1.0, 0.01, 1000, 1e-5)
    True
"""

from research_ext.privacy._clipping import clip_per_sample
from research_ext.privacy._distributed import DistributedDPSGD
from research_ext.privacy._dpsgd import DPSGD
from research_ext.privacy._noise import add_gaussian_noise
from research_ext.privacy._opacus_compat import PrivacyEngine
from research_ext.privacy._own_loop import DPOptimizer, NonDecomposableLossError
from research_ext.privacy._per_sample import per_sample_grads
from research_ext.privacy._sampling import PoissonLoader, poisson_loader
from research_ext.privacy._tuning import tuning_epsilon
from research_ext.privacy._validate import validate
from research_ext.privacy.accounting import PrivacyAccountant, epsilon, noise_multiplier_for

__all__ = [
    "DPOptimizer",
    "DPSGD",
    "DistributedDPSGD",
    "NonDecomposableLossError",
    "PoissonLoader",
    "PrivacyAccountant",
    "PrivacyEngine",
    "add_gaussian_noise",
    "clip_per_sample",
    "epsilon",
    "noise_multiplier_for",
    "per_sample_grads",
    "poisson_loader",
    "tuning_epsilon",
    "validate",
]
