"""Noise calibration: research_ext.privacy.noise_multiplier_for vs Opacus's get_noise_multiplier.

For each case and accountant (PRV and RDP, which both offer; PLD is ours only), the two run
interleaved with every cache cleared before each call (cold calibration). Printed per row: the
median seconds of each and the ratio ours / Opacus, the sigmas, and the tightness of each sigma:
sigma / sigma* - 1, where sigma* is the smallest sigma whose epsilon <= target, found by bisection
(to 0.01 %) on an independent tight accountant (dp-accounting's PLD for PRV and PLD; for RDP,
dp-accounting's RDP on our orders, an independent evaluation of the same bound). Then a JSON line.
Goals: tightness <= 0.5 %, <= 1 s per calibration. The machine may be loaded: compare ratios.

First, the cold calibration: each call in a fresh interpreter (``python -c``), ours and Opacus's
interleaved, ``COLD_ROUNDS`` times each, for PRV; printed per row are the median first-call seconds (after
the imports, which are timed and printed separately), the ratio ours / Opacus, the sigma and the
load average around the row. ``--cold-only`` stops after that part. The interpreters import
``research_ext`` from the current directory first, so running this from an export of an
older commit (``git archive``) times that commit's calibration.
"""

import json
import os
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")

from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent  # noqa: E402
from dp_accounting.pld import pld_privacy_accountant  # noqa: E402
from dp_accounting.rdp import RdpAccountant  # noqa: E402
from opacus.accountants.utils import get_noise_multiplier  # noqa: E402

from research_ext.privacy import noise_multiplier_for  # noqa: E402
from research_ext.privacy.accounting import _calibration, _epsilon, _rdp  # noqa: E402

CASES = [  # (target epsilon, delta, sample rate, steps)
    (0.5, 1e-5, 0.001, 5000),
    (3.0, 1e-5, 0.0043, 13953),
    (1.0, 1e-5, 256 / 1437, 170),
    (8.0, 1e-5, 0.01, 1000),
    (2.0, 1e-6, 0.001, 100_000),
]
ROUNDS = 3
COLD_ROUNDS = 2
COLD_ACCOUNTANTS = ("prv",)  # the goal; RDP's first call is a few milliseconds

_COLD = """
import json, time, warnings
warnings.filterwarnings("ignore")
start = time.perf_counter()
if {ours}:
    from research_ext.privacy import noise_multiplier_for
    imported = time.perf_counter()
    sigma = noise_multiplier_for({target}, {delta}, {q}, {steps}, accountant={accountant!r})
else:
    from opacus.accountants.utils import get_noise_multiplier
    imported = time.perf_counter()
    sigma = get_noise_multiplier(target_epsilon={target}, target_delta={delta}, sample_rate={q},
                                 steps={steps}, accountant={accountant!r})
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "call": done - imported, "sigma": sigma}}))
"""


def cold(name, accountant, target, delta, q, steps):
    """Import and first-call seconds, and sigma, of one calibration in a fresh interpreter."""
    code = _COLD.format(
        ours=name == "ours", accountant=accountant, target=target, delta=delta, q=q, steps=steps
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_rows():
    rows = []
    for case in CASES:
        for accountant in COLD_ACCOUNTANTS:
            load_before = os.getloadavg()[0]
            runs = {"ours": [], "opacus": []}
            for _ in range(COLD_ROUNDS):
                for name in runs:
                    runs[name].append(cold(name, accountant, *case))
            call = {k: statistics.median(r["call"] for r in v) for k, v in runs.items()}
            imports = {k: statistics.median(r["import"] for r in v) for k, v in runs.items()}
            row = {
                "case": dict(
                    zip(("target_epsilon", "delta", "sample_rate", "steps"), case, strict=True)
                ),
                "accountant": accountant,
                "cold_first_call_seconds": {k: round(v, 3) for k, v in call.items()},
                "import_seconds": {k: round(v, 3) for k, v in imports.items()},
                "ratio_ours_over_opacus": round(call["ours"] / call["opacus"], 4),
                "sigma": {k: round(v[-1]["sigma"], 5) for k, v in runs.items()},
                "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "target_seconds": 1.0,
            }
            rows.append(row)
            print(
                f"cold {case} {accountant}: first call {row['cold_first_call_seconds']} s "
                f"(ratio {row['ratio_ours_over_opacus']}), imports {row['import_seconds']} s, "
                f"sigma {row['sigma']}, load {row['load_average_1min']}",
                flush=True,
            )
    return rows


def _clear():
    _calibration._calibrate.cache_clear()
    _epsilon._epsilon_cached.cache_clear()
    _rdp._integer.cache_clear()
    _rdp._fractional.cache_clear()


def ours(accountant, target, delta, q, steps):
    _clear()
    return noise_multiplier_for(target, delta, q, steps, accountant=accountant)


def opacus(accountant, target, delta, q, steps):
    return get_noise_multiplier(
        target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps, accountant=accountant
    )


def _pld(sigma, q, steps, delta):
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


def _rdp_reference(sigma, q, steps, delta):
    acc = RdpAccountant(orders=list(_rdp.FRACTIONAL_ORDERS) + list(_rdp.INTEGER_ORDERS))
    acc.compose(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


def smallest_sigma(reference, target, delta, q, steps, lo, hi):
    """Bisection on log sigma to 0.01 %: the smallest sigma the reference finds feasible."""
    while reference(lo, q, steps, delta) <= target:
        lo /= 1.5
    while reference(hi, q, steps, delta) > target:
        hi *= 1.5
    while hi / lo > 1.0001:
        mid = (lo * hi) ** 0.5
        if reference(mid, q, steps, delta) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def main():
    cold_results = cold_rows()
    print(json.dumps({"benchmark": "privacy_calibration_cold", "results": cold_results}))
    if "--cold-only" in sys.argv:
        return
    ours("prv", 1.0, 1e-5, 0.01, 10)  # imports and first-call set-up, outside the timings
    opacus("prv", 1.0, 1e-5, 0.01, 10)
    rows = []
    for case in CASES:
        target, delta, q, steps = case
        for accountant in ("prv", "rdp", "pld"):
            names = ("ours", "opacus") if accountant != "pld" else ("ours",)
            times = {name: [] for name in names}
            sigma = {}
            for _ in range(ROUNDS):
                for name in names:
                    fn = ours if name == "ours" else opacus
                    start = time.perf_counter()
                    sigma[name] = fn(accountant, *case)
                    times[name].append(time.perf_counter() - start)
            med = {k: statistics.median(v) for k, v in times.items()}
            reference = _rdp_reference if accountant == "rdp" else _pld
            best = smallest_sigma(
                reference, target, delta, q, steps, sigma["ours"] * 0.9, sigma["ours"]
            )
            row = {
                "case": {
                    "target_epsilon": target,
                    "delta": delta,
                    "sample_rate": round(q, 5),
                    "steps": steps,
                },
                "accountant": accountant,
                "seconds": {k: round(v, 3) for k, v in med.items()},
                "ratio_ours_over_opacus": (
                    round(med["ours"] / med["opacus"], 3) if "opacus" in med else None
                ),
                "sigma": {k: round(v, 5) for k, v in sigma.items()},
                "sigma_star": round(best, 5),
                "tightness_percent": {k: round(100 * (v / best - 1), 3) for k, v in sigma.items()},
                "target_seconds": 1.0,
                "target_tightness_percent": 0.5,
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(
                f"{row['case']} {accountant}: seconds {row['seconds']} "
                f"(ratio {row['ratio_ours_over_opacus']}); sigma {row['sigma']} vs sigma* "
                f"{row['sigma_star']}: over by {row['tightness_percent']} % "
                f"(load {row['load_average_1min']})",
                flush=True,
            )
    print(json.dumps({"benchmark": "privacy_calibration", "results": rows}))


if __name__ == "__main__":
    main()
