"""Noise calibration time: research_ext.privacy.noise_multiplier_for vs Opacus's get_noise_multiplier.

Both with the PRV accountant, interleaved, caches cleared before every call (cold calibration).
Prints medians, the ratio ours / Opacus, the resulting sigmas and epsilons, and a JSON line.
Target: <= 1 s per calibration.
"""

import json
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

from opacus.accountants.utils import get_noise_multiplier  # noqa: E402

from research_ext.privacy import epsilon, noise_multiplier_for  # noqa: E402
from research_ext.privacy.accounting import _calibration, _epsilon  # noqa: E402

CASES = [  # (target epsilon, delta, sample rate, steps)
    (3.0, 1e-5, 0.0043, 13953),
    (1.0, 1e-5, 256 / 1437, 170),
    (8.0, 1e-5, 0.01, 1000),
    (0.5, 1e-5, 0.02, 500),
]
ROUNDS = 3


def ours(target, delta, q, steps):
    _calibration._calibrate.cache_clear()
    _epsilon._epsilon_cached.cache_clear()
    return noise_multiplier_for(target, delta, q, steps)


def opacus(target, delta, q, steps):
    return get_noise_multiplier(
        target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps, accountant="prv"
    )


def main():
    rows = []
    for case in CASES:
        times = {"ours": [], "opacus": []}
        sigma = {}
        for _ in range(ROUNDS):
            for name, fn in (("ours", ours), ("opacus", opacus)):
                start = time.perf_counter()
                sigma[name] = fn(*case)
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        target, delta, q, steps = case
        row = {
            "case": {
                "target_epsilon": target,
                "delta": delta,
                "sample_rate": round(q, 5),
                "steps": steps,
            },
            "seconds": {k: round(v, 3) for k, v in med.items()},
            "ratio_ours_over_opacus": round(med["ours"] / med["opacus"], 3),
            "sigma": {k: round(v, 4) for k, v in sigma.items()},
            "epsilon_at_sigma": {
                k: round(epsilon(v, q, steps, delta), 4) for k, v in sigma.items()
            },
            "target_seconds": 1.0,
        }
        rows.append(row)
        print(
            f"{row['case']}: ours {row['seconds']['ours']} s, opacus {row['seconds']['opacus']} s, "
            f"ratio {row['ratio_ours_over_opacus']}; sigma {row['sigma']}; eps {row['epsilon_at_sigma']}"
        )
    print(json.dumps({"benchmark": "privacy_calibration", "results": rows}))


if __name__ == "__main__":
    main()
