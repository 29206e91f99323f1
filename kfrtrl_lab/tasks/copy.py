"""The copy (string memorisation) task with its curriculum, as the official code ran it
(algorithms.md, section 6).

Symbols: 0, 1 bits, 2 marker, 3 blank (one-hot inputs of size 4). A sequence of length T:

    input  = [2, b_1 … b_T, 3 × (T+1)]          (length 2T+2)
    target = [3 × (T+1), 2, b_1 … b_T]

so each bit must be reproduced T+1 steps after it was read. Curriculum: T_max starts at 1;
ema ← 0.999·ema + 0.001·loss_bits after every step (ema starts at 1.0); when a lane starts a
new sequence and ema < 0.15, T_max += 1 and ema ← 0.3. Each new sequence draws T uniformly
from {max(1, T_max − 4), …, T_max}. Lanes are independent streams: each starts its next
sequence as soon as its last one ends, and its state is reset then. With ``synchronous=True``
(for full BPTT, which updates at the end of a sequence) all lanes share one T per round and start
and end their sequences together.
"""

from __future__ import annotations

import math

import torch

from .base import Task

BIT0, BIT1, MARKER, BLANK = 0, 1, 2, 3
VOCAB = 4


def copy_sequence(T: int, seed: int = 0, dtype=torch.float32):
    """One copy sequence of length T: (inputs (2T+2, 4) one-hot, targets (2T+2,))."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    bits = torch.randint(0, 2, (T,), generator=torch.Generator().manual_seed(int(seed)))
    blanks = torch.full((T + 1,), BLANK)
    inputs = torch.cat([torch.tensor([MARKER]), bits, blanks])
    targets = torch.cat([blanks, torch.tensor([MARKER]), bits])
    return torch.nn.functional.one_hot(inputs, VOCAB).to(dtype), targets


class CopyTask(Task):
    """B independent lanes of copy sequences under the curriculum.

    Per step: ``x, y, starts = task.next()`` gives one-hot inputs (B, 4), targets (B,) and the
    lanes that start a new sequence at this step (reset them before stepping); after the step
    ``task.observe(losses_nats)`` feeds the batch loss to the curriculum.
    """

    name = "copy"
    defaults = {"hidden": 128, "batch": 16}
    input_size = output_size = VOCAB

    def __init__(self, batch_size: int, seed: int = 0, device="cpu", dtype=torch.float32,
                 ema_decay: float = 0.999, threshold: float = 0.15, ema_after_increase: float = 0.3,
                 window: int = 5, synchronous: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.synchronous = synchronous
        self.batch_size, self.device, self.dtype = batch_size, torch.device(device), dtype
        self.ema_decay, self.threshold, self.ema_after_increase, self.window = (
            ema_decay, threshold, ema_after_increase, window)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.t_max = 1
        self.ema = 1.0
        B = batch_size
        self.length = torch.zeros(B, dtype=torch.long)  # T of each lane's current sequence
        self.position = torch.zeros(B, dtype=torch.long)  # step within it, 0 … 2T+1
        self.bits = torch.zeros(B, 1, dtype=torch.long)
        self._fresh = True  # every lane starts a sequence at the first step

    def _start_sequences(self, lanes: torch.Tensor) -> None:
        if self.ema < self.threshold:  # checked once per step: after it fires, ema = 0.3
            self.t_max += 1
            self.ema = self.ema_after_increase
        k = int(lanes.sum())
        low = max(1, self.t_max - self.window + 1)
        T = torch.randint(low, self.t_max + 1, (1 if self.synchronous else k,), generator=self.generator).expand(k)
        if self.bits.shape[1] < self.t_max:
            self.bits = torch.nn.functional.pad(self.bits, (0, self.t_max - self.bits.shape[1]))
        self.bits[lanes] = torch.randint(0, 2, (k, self.bits.shape[1]), generator=self.generator)
        self.length[lanes] = T
        self.position[lanes] = 0

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "CopyTask":
        return cls(config.batch, seed=config.seed, device=device, synchronous=aligned)

    @property
    def aligned_starts(self) -> bool:
        return self.synchronous

    def next(self):
        """(x (B, 4) one-hot, y (B,) targets, starts (B,) bool) for the next time step."""
        starts = torch.ones(self.batch_size, dtype=torch.bool) if self._fresh else self.position == 2 * self.length + 2
        self._fresh = False
        if starts.any():
            self._start_sequences(starts)
        pos, T, bits = self.position, self.length, self.bits
        cap = bits.shape[1] - 1
        read = bits.gather(1, (pos - 1).clamp(0, cap)[:, None]).squeeze(1)
        recall = bits.gather(1, (pos - T - 2).clamp(0, cap)[:, None]).squeeze(1)
        x_tok = torch.where(pos == 0, MARKER, torch.where(pos <= T, read, BLANK))
        y_tok = torch.where(pos <= T, BLANK, torch.where(pos == T + 1, MARKER, recall))
        self.position = pos + 1
        x = torch.nn.functional.one_hot(x_tok, VOCAB).to(self.dtype)
        return x.to(self.device), y_tok.to(self.device), starts.to(self.device)

    def observe(self, losses_nats: torch.Tensor) -> float:
        """Feed one step's per-lane losses (nats) to the curriculum; returns the batch loss in bits."""
        loss_bits = float(losses_nats.mean()) / math.log(2)
        self.ema = self.ema_decay * self.ema + (1 - self.ema_decay) * loss_bits
        return loss_bits

    def state_dict(self) -> dict:
        return {"t_max": self.t_max, "ema": self.ema, "length": self.length.clone(),
                "position": self.position.clone(), "bits": self.bits.clone(), "fresh": self._fresh,
                "generator": self.generator.get_state(), "synchronous": self.synchronous}

    def load_state_dict(self, state: dict) -> None:
        self.t_max, self.ema, self._fresh = state["t_max"], state["ema"], state["fresh"]
        self.length, self.position, self.bits = (state["length"].clone(), state["position"].clone(),
                                                 state["bits"].clone())
        self.generator.set_state(state["generator"])

    def metrics(self) -> dict:
        return {"t_max": self.t_max, "ema_bits": round(self.ema, 6)}
