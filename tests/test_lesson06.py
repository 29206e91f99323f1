"""Lesson 6: the notebook's solutions pass their checkers, planted wrong answers fail them, and the
package functions the lesson adds (operation counts, crossings, throughput, the time-vs-flops figure)."""

from pathlib import Path

import nbformat
import pytest
from conftest import notebook_cells

from kfrtrl_lab.notebook import experiments as ex
from kfrtrl_lab.notebook import figures
from kfrtrl_lab.notebook.exercises import ExerciseFailed, lesson06
from kfrtrl_lab.results import benchmark_rows

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_cost_and_scaling.ipynb"


@pytest.fixture(scope="module")
def solutions():
    """The notebook's code solution cells, executed: {name: function}."""
    return notebook_cells(NOTEBOOK.name)


def test_solutions_pass(solutions):
    lesson06.check_influence_macs(solutions["influence_macs"])
    lesson06.check_lane_numbers(solutions["lane_numbers"])
    lesson06.check_slope_and_crossing(solutions["loglog_slope"], solutions["crossover"])


def test_stubs_raise_not_implemented():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if "exercise" in cell.metadata.get("tags", []):
            namespace = {}
            exec(cell.source, namespace)  # noqa: S102
            fn = next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))
            with pytest.raises(NotImplementedError):
                fn(*([[8, 16], [1.0, 2.0]] if fn.__code__.co_argcount == 2 else
                     [[8, 16], [1.0, 2.0], [2.0, 1.0]] if fn.__code__.co_argcount == 3 else ["rtrl", 8, 4, 2]))


@pytest.mark.parametrize("wrong", [
    lambda method, n, m, r_g: 2 * n**2 * (m + n + 1) * r_g * n if method == "rtrl" else 2 * r_g * n**3,  # flops, not multiply-adds
    lambda method, n, m, r_g: n**2 * (m + n + 1) * r_g * n if method == "rtrl" else n**3,  # forgets r_g
    lambda method, n, m, r_g: n * (m + n + 1) * r_g * n if method == "rtrl" else r_g * n**3,  # RTRL: n P
])
def test_influence_macs_wrong_answers_fail(wrong):
    with pytest.raises(ExerciseFailed):
        lesson06.check_influence_macs(wrong)


def _numbers(method, n, m, r_g, kf=lambda a, n, r_g: a + r_g * n * n, uoro_n=True):
    a = m + n + 1
    P = a * r_g * n
    if method == "rtrl":
        return n * P
    if method == "kf-rtrl":
        return kf(a, n, r_g)
    if method == "uoro":
        return (n if uoro_n else 0) + P
    if method == "snap-1":
        return P
    return int(method.rsplit("-", 1)[1]) * kf(a, n, r_g)


@pytest.mark.parametrize("wrong", [
    lambda method, n, m, r_g: _numbers(method, n, m, r_g, kf=lambda a, n, r_g: a + n * n),  # A as n × n
    lambda method, n, m, r_g: _numbers(method, n, m, r_g, uoro_n=False),  # UORO without s̃
    lambda method, n, m, r_g: _numbers(method, n, m, r_g) * (2 if method == "snap-1" else 1),
])
def test_lane_numbers_wrong_answers_fail(wrong):
    with pytest.raises(ExerciseFailed):
        lesson06.check_lane_numbers(wrong)


def test_slope_and_crossing_wrong_answers_fail(solutions):
    slope, cross = solutions["loglog_slope"], solutions["crossover"]
    with pytest.raises(ExerciseFailed):  # slope of time against n, not of log against log
        lesson06.check_slope_and_crossing(lambda ns, ts: (ts[-1] - ts[0]) / (ns[-1] - ns[0]), cross)
    with pytest.raises(ExerciseFailed):  # the first measured size past the crossing, not the interpolation
        lesson06.check_slope_and_crossing(slope, lambda ns, a, b: next((n for n, x, y in zip(ns, a, b) if x > y), None))
    with pytest.raises(ExerciseFailed):  # linear instead of log-log interpolation
        def linear(ns, a, b):
            for n0, n1, a0, a1, b0, b1 in zip(ns, ns[1:], a, a[1:], b, b[1:]):
                if a0 <= b0 and a1 > b1:
                    d0, d1 = a0 - b0, a1 - b1
                    return n0 + (n1 - n0) * (-d0) / (d1 - d0)
            return None
        lesson06.check_slope_and_crossing(slope, linear)


def test_counted_macs_and_lane_numbers_follow_the_counts():
    rtrl = ex.counted_macs("rtrl", 8)
    assert rtrl["bmm"] == 8**2 * rtrl["P"]
    kf = ex.counted_macs("kf-rtrl", 16, cell="tanh")
    assert kf["gate_blocks"] == 1 and kf["bmm"] == 17 * 16 * 16 + 16 * 16
    assert ex.counted_macs("uoro", 8)["bmm"] == 0  # an elementwise influence update
    assert ex.lane_numbers("kf-rtrl", 8, 4) == (4 + 8 + 1) + 2 * 8 * 8 + 1  # u, A and A's scale
    assert ex.lane_numbers("ok-3", 8, 4) == 3 * ((4 + 8 + 1) + 2 * 8 * 8)


def test_crossover_n():
    ns = [32, 64, 128]
    assert ex.crossover_n(ns, [1.0, 4.0, 16.0], [2.0, 2.0, 2.0]) == pytest.approx(32 * 2**0.5)
    assert ex.crossover_n(ns, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None  # always below
    assert ex.crossover_n(ns, [3.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None  # starts above


def test_throughput_and_time_vs_flops_figure():
    rows = ex.throughput_rows(benchmark_rows(ROOT / "results" / "step_cost_cpu.json"))
    bare = next(r for r in rows if r["method"] == "bare H·A" and r["n"] == 256)
    assert bare["flops"] == 2 * 32 * 2 * 256**3
    assert bare["GFLOP_per_s"] == pytest.approx(bare["flops"] / bare["ms_per_step"] / 1e6)
    fig = figures.time_vs_flops_figure(rows)
    names = [t.name for t in fig.data]
    assert "kf-rtrl" in names and any("bare H·A's best rate" in name for name in names)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
