"""Privacy accounting for DP-SGD: epsilon of a run and noise calibration to a target epsilon.

RDP is computed here (integer orders to 8192, Opacus's fractional ones), PRV by our own numerical
composition of the privacy loss (FFT on a dominating discretisation), PLD through Google's
dp-accounting (the ``pld`` extra); each gives a certified upper bound on epsilon.
"""

from research_ext.privacy.accounting._accountant import PrivacyAccountant
from research_ext.privacy.accounting._calibration import noise_multiplier_for
from research_ext.privacy.accounting._epsilon import epsilon

__all__ = ["PrivacyAccountant", "epsilon", "noise_multiplier_for"]
