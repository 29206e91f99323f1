"""kfrtrl_lab: exact and approximate online gradients for Kronecker-class RNNs.

    import kfrtrl_lab as kl
    model = kl.RecurrentModel(kl.RHN(input_size=m, hidden_size=n), output_size=k)
    est = kl.make_estimator("kf-rtrl", model, batch_size=B, seed=0)
    loss = est.step(x_t, y_t)          # fills .grad; then optimizer.step()

Layout: ``cells/`` (the Kronecker class), ``estimators/`` (one file a method), ``tasks/`` (copy,
char-PTB), ``train.py`` and ``runs.py`` (the online trainer and its run folders), ``analysis.py``
and ``measure.py`` (gradients and costs), ``notebook/`` (what the notebooks compute and draw).
"""

from .analysis import cosine_to_exact, gradient_samples, relative_error, true_gradient, unbiasedness_test
from .cells import CELLS, LRU, LSTM, RHN, Cell, CellStep, TanhRNN, make_cell, register_cell
from .estimators import (KFRTRL, LRURTRL, METHODS, RTRL, UORO, BPTT, Estimator, NonFiniteError, TruncatedBPTT,
                         make_estimator, register_method)
from .model import Layer, RecurrentModel
from .stack import (LayerwiseLearner, StackedModel, layerwise_bias, layerwise_gradient, make_stack,
                    stack_true_gradient)

__all__ = [
    "Cell", "CellStep", "TanhRNN", "RHN", "LSTM", "LRU", "CELLS", "make_cell", "register_cell", "RecurrentModel",
    "Layer", "Estimator", "NonFiniteError", "BPTT", "TruncatedBPTT", "RTRL", "LRURTRL", "KFRTRL", "UORO",
    "METHODS", "make_estimator", "register_method",
    "StackedModel", "make_stack", "LayerwiseLearner", "stack_true_gradient", "layerwise_gradient", "layerwise_bias",
    "true_gradient", "gradient_samples", "relative_error", "cosine_to_exact", "unbiasedness_test",
]
__version__ = "0.2.0"
