"""kfrtrl_lab: exact and approximate online gradients for Kronecker-class RNNs.

    import kfrtrl_lab as kl
    model = kl.RecurrentModel(kl.RHN(input_size=m, hidden_size=n), output_size=k)
    est = kl.make_estimator("kf-rtrl", model, batch_size=B, seed=0)
    loss = est.step(x_t, y_t)          # fills .grad; then optimizer.step()
"""

from .analysis import cosine_to_exact, gradient_samples, relative_variance, true_gradient
from .bptt import TruncatedBPTT
from .cells import RHN, Cell, TanhRNN
from .estimator import Estimator, NonFiniteError
from .kf_rtrl import KFRTRL
from .methods import METHODS, make_estimator
from .model import RecurrentModel
from .rtrl import RTRL
from .uoro import UORO

__all__ = [
    "Cell", "TanhRNN", "RHN", "RecurrentModel",
    "Estimator", "NonFiniteError", "TruncatedBPTT", "RTRL", "KFRTRL", "UORO",
    "METHODS", "make_estimator", "true_gradient", "gradient_samples", "relative_variance", "cosine_to_exact",
]
__version__ = "0.1.0"
