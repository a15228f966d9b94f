"""One reporting convention for the Python benchmarks (see benches/support/mod.rs).

A ratio is always keel's speed over the baseline's: above 1 means keel is faster.
Rounds interleave keel and the baseline; rows print the median and spread of the
per-round ratios and whether the row's target was met.
"""

import statistics
import time


def interleaved(rounds, baseline, keel):
    """Runs `rounds` interleaved rounds; each callable returns a cost (lower is better)."""
    costs = ([], [])
    for _ in range(rounds):
        costs[0].append(baseline())
        costs[1].append(keel())
    return costs


def spread(samples):
    return statistics.median(samples), min(samples), max(samples)


def report(name, unit, baseline_costs, keel_costs, target=None):
    """Prints one row; `target` is the minimum ratio, or None for a row reported only."""
    ratios = [b / k for b, k in zip(baseline_costs, keel_costs)]
    b, k, r = spread(baseline_costs), spread(keel_costs), spread(ratios)
    verdict = ""
    if target is not None:
        verdict = f"target >= {target:.2f}: {'met' if r[0] >= target else 'NOT MET'}"
    print(
        f"{name:<40} baseline {b[0]:>10.1f} {unit} ({b[1]:.1f}..{b[2]:.1f})  "
        f"keel {k[0]:>10.1f} {unit} ({k[1]:.1f}..{k[2]:.1f})  "
        f"ratio {r[0]:>5.2f} ({r[1]:.2f}..{r[2]:.2f})  {verdict}"
    )
    return r[0]


def timed(body):
    start = time.perf_counter()
    body()
    return time.perf_counter() - start


def header(title):
    print(title)
    print("ratio = keel's speed / the baseline's (above 1: keel is faster); median (min..max) of interleaved rounds")
