"""Checkers for lesson 6 (cost and scaling). Each draws its own sizes and compares the student's
function with the package: operation counts taken while the package runs a step
(``experiments.counted_macs``), the numbers an estimator keeps per lane (``experiments.lane_numbers``),
and the package's slope and crossing point (``measure.loglog_slope``, ``experiments.crossover_n``)."""

from __future__ import annotations

import math
import random

from .. import experiments as ex
from . import ExerciseFailed, expect_close, expect_true, passed

CELLS = {"tanh": 1, "rhn": 2}  # cell: r_g (both have one slot per unit)


def check_influence_macs(influence_macs) -> str:
    """``influence_macs(method, n, m, r_g)``: multiply-adds per lane of the batched product that
    updates the influence in one step — exact RTRL's H_t G_{t-1}, KF-RTRL's M_t = H_t A_{t-1} —
    against the count FlopCounterMode takes while the package runs that step. RTRL must match
    exactly; KF-RTRL to leading order (the package folds two extra rows into its product:
    (∂L_t/∂h_t) H_t and (∂L_t/∂h_t) M_t, so it does (n+1)·n·r_g n + n² multiply-adds: within 2.5/n)."""
    rng = random.Random(6001)
    for cell, r_g in CELLS.items():
        for method, sizes in (("rtrl", (12, 20)), ("kf-rtrl", (64, 96))):
            for n in sizes:
                m = rng.randint(2, 12)
                counted = ex.counted_macs(method, n, m, cell)["bmm"]
                got = influence_macs(method, n, m, r_g)
                expect_true(got is not None and math.isfinite(float(got)),
                            f"influence_macs({method!r}, n={n}, m={m}, r_g={r_g}) returned {got!r}")
                got = float(got)
                if method == "rtrl":
                    expect_true(got == counted, f"exact RTRL, n={n}, m={m}, r_g={r_g} ({cell}): the package's "
                                f"H_t G_{{t-1}} takes {counted:.0f} multiply-adds per lane, you counted {got:.0f} "
                                f"(G_t is n × P with P = (m+n+1)·r_g·n)")
                else:
                    gap = abs(got / counted - 1)
                    expect_true(gap <= 2.5 / n, f"KF-RTRL, n={n}, r_g={r_g} ({cell}): the package's product "
                                f"takes {counted:.0f} multiply-adds per lane, you counted {got:.0f} "
                                f"({100 * gap:.1f}% off; H_t is n × n, A_{{t-1}} is n × r_g n)")
    return passed("Exercise 6.1", "RTRL's n²P and KF-RTRL's r_g n³ match the products the package runs")


def check_lane_numbers(lane_numbers) -> str:
    """``lane_numbers(method, n, m, r_g)``: how many numbers one lane keeps as its influence
    estimate, for rtrl, kf-rtrl, uoro, snap-1, ok-<r> and kf-avg-<K>, against the sizes of the
    package estimator's per-lane state (KF-RTRL's stored A carries one extra scalar: a
    difference of one number is allowed)."""
    rng = random.Random(6002)
    for cell, r_g in CELLS.items():
        for _ in range(2):
            n, m = rng.randint(3, 24), rng.randint(2, 30)
            methods = ["rtrl", "kf-rtrl", "uoro", "snap-1", f"ok-{rng.randint(2, 9)}", f"kf-avg-{rng.randint(2, 9)}"]
            for method in methods:
                kept = ex.lane_numbers(method, n, m, cell)
                got = lane_numbers(method, n, m, r_g)
                expect_true(got is not None, f"lane_numbers({method!r}, ...) returned None")
                expect_true(abs(float(got) - kept) <= 1, f"{method}, n={n}, m={m}, r_g={r_g} ({cell}): the package "
                            f"keeps {kept:.0f} numbers per lane, you predicted {float(got):.0f} "
                            f"(a = m+n+1 = {m + n + 1}, P = a·r_g·n = {(m + n + 1) * r_g * n})")
    return passed("Exercise 6.2", "memory per lane predicted for RTRL, KF-RTRL, UORO, SnAp-1, OK-r and KF-AVG-K")


def check_slope_and_crossing(loglog_slope, crossover) -> str:
    """``loglog_slope(ns, times)``: least-squares slope of log time against log n;
    ``crossover(ns, times_a, times_b)``: the n where a's time first rises above b's (log–log
    interpolation between neighbouring sizes), None when it does not within the sizes. Compared
    with ``measure.loglog_slope`` and ``experiments.crossover_n`` on random data."""
    rng = random.Random(6003)
    for _ in range(20):
        ns = sorted(rng.sample([8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], rng.randint(3, 6)))
        a = [rng.uniform(0.2, 3.0) * n ** rng.uniform(0.5, 3.0) * rng.uniform(0.8, 1.25) for n in ns]
        b = [rng.uniform(0.2, 300.0) * n ** rng.uniform(0.0, 1.5) for n in ns]
        expect_close(loglog_slope(ns, a), ex.loglog_slope(ns, a), f"the slope for times {[round(t, 3) for t in a]}",
                     rtol=1e-9)
        want, got = ex.crossover_n(ns, a, b), crossover(ns, a, b)
        if want is None:
            expect_true(got is None, f"a = {[round(t, 3) for t in a]} never rises above b = {[round(t, 3) for t in b]} "
                        f"from below over n = {ns}: expected None, got {got!r}")
        else:
            expect_true(got is not None, f"a rises above b between the sizes n = {ns}: expected n ≈ {want:.4g}, got None")
            expect_close(got, want, f"the crossing of a = {[round(t, 3) for t in a]} and b = {[round(t, 3) for t in b]}",
                         rtol=1e-9)
    try:
        loglog_slope([8, 16], [1.0, 8.0])
    except Exception as e:  # noqa: BLE001
        raise ExerciseFailed(f"loglog_slope on two points failed: {e!r}") from e
    return passed("Exercise 6.3", "log–log slopes and crossing points agree with the package's")
