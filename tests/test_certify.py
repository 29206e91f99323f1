"""The certificate works for any registered estimator, including one registered from a user's file."""

import json

from kfrtrl_lab.__main__ import main

PLUGIN = '''
import torch
import kfrtrl_lab as kl


@kl.register_method
class NoisyRTRL(kl.RTRL):
    """Exact RTRL plus zero-mean noise on every gradient: unbiased by construction."""

    name = "toy-noisy-rtrl"
    stochastic = True

    def recurrent_gradient(self, dl_ds, per_lane=False):
        exact = super().recurrent_gradient(dl_ds, per_lane=True)
        noisy = exact + 0.1 * self.random.signs(exact.shape, exact.dtype)  # the estimator's own stream
        return noisy if per_lane else noisy.sum(0)
'''


def test_certify_a_toy_estimator_from_a_plugin_file(tmp_path, capsys):
    plugin = tmp_path / "my_estimator.py"
    plugin.write_text(PLUGIN)
    out = tmp_path / "certs"
    assert main(["certify", "toy-noisy-rtrl", "--plugin", str(plugin), "--cell", "tanh", "--profile", "quick",
                 "--out", str(out)]) == 0
    page = out / "certificate-toy-noisy-rtrl-tanh.html"
    printed = capsys.readouterr().out
    assert page.exists() and str(page) in printed
    # the verdict and its numbers are printed, and kept as JSON for a script
    assert "CERTIFICATE toy-noisy-rtrl on tanh: unbiased (0 of" in printed and "coordinates outside the z-bound" in printed
    verdict = json.loads((out / "certificate-toy-noisy-rtrl-tanh.json").read_text())
    assert verdict["passed"] is True and verdict["outcome"] == "unbiased"
    executed = json.loads((out / "certificate-toy-noisy-rtrl-tanh.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "unbiased: True" in text and "CERTIFICATE toy-noisy-rtrl on tanh: unbiased" in text


PLUGIN_LRU = '''
import kfrtrl_lab as kl
from kfrtrl_lab.estimators.lru_rtrl import LRURTRL


@kl.register_method
class NoisyLRURTRL(LRURTRL):
    """The LRU's exact RTRL plus zero-mean noise on every gradient: unbiased by construction."""

    name = "toy-noisy-lru"
    stochastic = True
    exact = False

    def recurrent_gradient(self, dl_ds, per_lane=False):
        exact = super().recurrent_gradient(dl_ds, per_lane=True)
        noisy = exact + 0.1 * self.random.signs(exact.shape, exact.dtype)
        return noisy if per_lane else noisy.sum(0)
'''

# the certificate at sizes below the quick profile's ("full" takes the sizes given), every section still run
SMALL = dict(profile="full", samples=400, hidden_sizes=[4, 8], lengths=[5], variance_samples=20, cost_sizes=[8])


def test_certify_an_estimator_for_the_lru_from_a_plugin_file(tmp_path):
    from kfrtrl_lab.notebook.certificate import certify

    plugin = tmp_path / "my_lru_estimator.py"
    plugin.write_text(PLUGIN_LRU)
    page, verdict = certify("toy-noisy-lru", tmp_path / "certs", cell="lru", plugin=str(plugin), **SMALL)
    assert page.exists() and verdict["passed"] is True and verdict["outcome"] == "unbiased"
    assert verdict["layerwise_method_test"]["violations"] == 0  # in both layers of an LRU stack too
    assert verdict["layerwise_bias_rtrl"]["1"]["layer 1 and up"] < 1e-20  # the LRU stack's layer-wise RTRL, L = 1
    executed = json.loads((tmp_path / "certs" / "certificate-toy-noisy-lru-lru.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "toy-noisy-lru n=  8 T=  5" in text and "tbptt-4 n=  8 T=  5" in text  # beside RTRL and TBPTT-4


def test_certify_refuses_unknown_names_before_running(tmp_path, capsys):
    assert main(["certify", "no-such-method", "--out", str(tmp_path)]) == 2
    assert "unknown method 'no-such-method'" in capsys.readouterr().err
    assert main(["certify", "kf-rtrl", "--cell", "gru", "--out", str(tmp_path)]) == 2
    assert main(["certify", "kf-rtrl", "--cell", "lru", "--out", str(tmp_path)]) == 2
    assert "method 'kf-rtrl' needs a Kronecker-class cell (rhn, tanh, lstm); with --cell lru certify one of bptt, tbptt-<k>, rtrl" \
        in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
