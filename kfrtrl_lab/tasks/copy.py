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

The task lives on the device as a handful of tensors and draws its lengths and bits from the
counter-based hash of :mod:`kfrtrl_lab.random` (lane b's k-th sequence has its own key), so a step
reads nothing back to the host: the trainer's fast path can run (and capture) many steps at once,
the curriculum still reacting at every step as above.
"""

from __future__ import annotations

import math

import torch

from ..random import TASK_BITS, TASK_LENGTHS, hash_bits, stream_key
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
    #: bits of one sequence are indexed lane·MAX_LENGTH + i in the hash
    MAX_LENGTH = 1 << 20

    def __init__(self, batch_size: int, seed: int = 0, device="cpu", dtype=torch.float32,
                 ema_decay: float = 0.999, threshold: float = 0.15, ema_after_increase: float = 0.3,
                 window: int = 5, synchronous: bool = False):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.synchronous, self.seed = synchronous, int(seed)
        self.batch_size, self.device, self.dtype = batch_size, torch.device(device), dtype
        self.ema_decay, self.threshold, self.ema_after_increase, self.window = (
            ema_decay, threshold, ema_after_increase, window)
        B, dev = batch_size, self.device
        lanes = torch.arange(B, device=dev)
        # One hash call per step draws, for lane b's k-th sequence (counter k), its length at index b
        # (synchronous: the round's, at index 0) in stream TASK_LENGTHS, and its bits i read and
        # recalled at index b·MAX_LENGTH + i in stream TASK_BITS: rows 0, 1, 2 of these keys and indices.
        lengths, bits = stream_key(self.seed, TASK_LENGTHS), stream_key(self.seed, TASK_BITS)
        self._row_keys = torch.tensor([[lengths], [bits], [bits]], device=dev)
        self._zeros = torch.zeros_like(lanes)
        bit_base = lanes * self.MAX_LENGTH
        self._row_index = torch.stack([self._zeros if synchronous else lanes, bit_base, bit_base])
        self._eye = torch.eye(VOCAB, device=dev, dtype=dtype)
        # the state, all on the device and updated in place
        self.t_max = torch.ones((), dtype=torch.long, device=dev)
        self.ema = torch.ones((), dtype=torch.float64, device=dev)
        self.length = torch.zeros(B, dtype=torch.long, device=dev)  # T of each lane's current sequence
        self.position = torch.full((B,), 2, dtype=torch.long, device=dev)  # step within it: 2T+2 = a start
        self.sequence = torch.full((B,), -1, dtype=torch.long, device=dev)  # how many sequences a lane began

    @classmethod
    def buffer_bytes(cls, config) -> int:
        return 8 * 8 * config.batch  # a few int64 per lane (lengths, positions, counters, hash rows)

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "CopyTask":
        return cls(config.batch, seed=config.seed, device=device, synchronous=aligned)

    @property
    def aligned_starts(self) -> bool:
        return self.synchronous

    def next(self):
        """(x (B, 4) one-hot, y (B,) targets, starts (B,) bool) for the next time step."""
        starts = self.position == 2 * self.length + 2
        # the curriculum, once per step at which any lane starts a sequence
        grow = starts.any() & (self.ema < self.threshold)
        self.t_max.add_(grow.long())
        self.ema.copy_(torch.where(grow, torch.full_like(self.ema, self.ema_after_increase), self.ema))
        self.sequence.add_(starts.long())
        low = (self.t_max - self.window + 1).clamp_min(1)
        self.position.masked_fill_(starts, 0)
        pos = self.position
        # bit i of the current sequence, for i = pos − 1 (read, at 1..T) and pos − T − 2 (recall, T+2..2T+1);
        # a lane starting now is at pos 0, where both clamp to 0 whatever its new T, so the old length serves.
        # (Synchronous lanes all hold the same sequence count, so the counter is the lane's in both layouts.)
        i = torch.stack([self._zeros, pos - 1, pos - self.length - 2]).clamp_min_(0)
        drawn = hash_bits(self._row_keys, self.sequence, self._row_index + i)
        T = low + drawn[0] % (self.t_max - low + 1)
        self.length.copy_(torch.where(starts, T, self.length))
        T = self.length
        read, recall = drawn[1:].bitwise_and_(1)
        x_tok = torch.where(pos == 0, MARKER, torch.where(pos <= T, read, BLANK))
        y_tok = torch.where(pos <= T, BLANK, torch.where(pos == T + 1, MARKER, recall))
        self.position.add_(1)
        return self._eye[x_tok], y_tok, starts

    def sequences_end(self) -> bool:
        return bool((self.position == 2 * self.length + 2).all())

    def observe(self, losses_nats: torch.Tensor) -> torch.Tensor:
        """Feed one step's per-lane losses (nats) to the curriculum; returns the batch loss in bits
        (a 0-dim device tensor: nothing is read back)."""
        loss_bits = losses_nats.mean().double() / math.log(2)
        self.ema.mul_(self.ema_decay).add_((1 - self.ema_decay) * loss_bits)
        return loss_bits

    def state_dict(self) -> dict:
        return {name: getattr(self, name).clone() for name in ("t_max", "ema", "length", "position", "sequence")} | {
            "seed": self.seed, "synchronous": self.synchronous}

    def load_state_dict(self, state: dict) -> None:
        if (state["seed"], state["synchronous"]) != (self.seed, self.synchronous):
            raise ValueError("copy task state is for another seed or layout")
        for name in ("t_max", "ema", "length", "position", "sequence"):
            getattr(self, name).copy_(state[name])

    def metrics(self) -> dict:
        return {"t_max": int(self.t_max), "ema_bits": round(float(self.ema), 6)}
