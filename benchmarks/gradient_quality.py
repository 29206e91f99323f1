"""How good are single gradient estimates on a trained copy-task model?

For a checkpoint of `python -m kfrtrl_lab train copy ...` (RHN, 4 symbols), take one copy
sequence of each length T and compare S independent estimates of dL/dW by each method with the
exact gradient (BPTT, float64): relative error E‖ĝ − g‖²/‖g‖² and the mean cosine to g.

    PYTHONPATH=. python benchmarks/gradient_quality.py runs/copy-kf-rtrl/checkpoint.pt --lengths 8 16 24
"""

import argparse
import json

import torch

import kfrtrl_lab as kl
from kfrtrl_lab.tasks.copy import copy_sequence
from kfrtrl_lab.train import load_model


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 24])
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--methods", nargs="+", default=["kf-rtrl", "uoro", "tbptt-16"])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)[0].double()
    for T in args.lengths:
        x, y = copy_sequence(T, seed=T, dtype=torch.float64)
        g = kl.true_gradient(model, x, y)
        row = {"T": T, "grad_norm": round(g.norm().item(), 3)}
        for method in args.methods:
            G = kl.gradient_samples(model, x, y, method, args.samples, seed=0)
            row[method] = {"relative_error": round(kl.relative_error(G, g), 3),
                           "mean_cosine": round(kl.cosine_to_exact(G, g).mean().item(), 3)}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
