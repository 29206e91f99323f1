"""The LRU paper's copy task, online (Zucchet et al. 2023, official config ``table1_lru.yaml``,
dataset ``copy-pad-classification``; algorithms.md, sections 6 and 8): fixed pattern length, no
curriculum.

A sequence of S = 2P + pad + 1 steps (P = ``pattern_length``, pad = ``pad_length``), bits = ``pattern_bits``:

    step  0 … P−1          input: the pattern's symbol b_i as ``bits`` binary channels; target: blank
    step  P … P+pad−1      input: 0;                                                 target: blank
    step  P+pad            input: the stop channel (channel ``bits``) = 1;           target: blank
    step  P+pad+1 … S−1    input: 0;                                     target: b_1 … b_P (recall)

Input width bits + 1. Defaults as the official config: P = 20, 7-bit symbols, and pad = 7 — the
official code passes ``padding_length=5``, but its task reads ``pad_length`` (default 7), so its
sequences are 48 steps, not 46. Two differences from the official loss, both so that the task fits
this package's one softmax readout with a target at every step: a recall step's target is the
symbol as one of 2^bits classes (the official code scores each of the 7 bits as its own binary
cross-entropy, averaged: the same optimum), and the other steps' target is one extra blank class
(the official code masks them out). ``recall_bits`` in the metrics is the loss of the recall steps
alone, in bits per symbol (a guess: ``bits`` bits).

Online: B lanes run their sequences back to back, all starting together (every lane's state is reset
at each start), so full BPTT can update at sequence ends. The symbols are drawn by the counter-based
hash of :mod:`kfrtrl_lab.random` (lane b's k-th sequence, symbol i), on the device.
"""

from __future__ import annotations

import math

import torch

from ..random import TASK_BITS, hash_bits, stream_key
from .base import Task


class PaddedCopyTask(Task):
    name = "copy-pad"
    defaults = {"hidden": 64, "batch": 50}
    options = ("pattern_length", "pattern_bits", "pad_length")
    #: the sizes with the default options (an instance has its own: bits + 1 and 2^bits + 1)
    input_size, output_size = 8, 129
    #: the widest symbol: 2^16 + 1 classes already make a readout of 65537 columns
    MAX_BITS = 16

    def __init__(self, batch_size: int, seed: int = 0, device="cpu", dtype=torch.float32, pattern_length: int = 20,
                 pattern_bits: int = 7, pad_length: int = 7):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.check_options(pattern_length, pattern_bits, pad_length)
        self.batch_size, self.seed, self.device, self.dtype = batch_size, int(seed), torch.device(device), dtype
        self.pattern_length, self.pattern_bits, self.pad_length = pattern_length, pattern_bits, pad_length
        self.input_size, self.output_size = self.io_sizes(pattern_bits)
        self.blank = 2**pattern_bits  # the class of every step that recalls nothing
        self.sequence_length = 2 * pattern_length + pad_length + 1
        self.recall_start = pattern_length + pad_length + 1
        dev = self.device
        self._key = stream_key(self.seed, TASK_BITS)
        self._lane_base = torch.arange(batch_size, device=dev) * pattern_length  # symbol i of lane b: b·P + i
        self._bit_values = 2 ** torch.arange(pattern_bits, device=dev)
        # the state, on the device and updated in place: nothing is read back per step
        self.position = torch.zeros((), dtype=torch.long, device=dev)  # step within the sequence (0 = a start)
        self.sequence = torch.full((), -1, dtype=torch.long, device=dev)  # sequences begun (the hash's counter)
        self._recalling = torch.zeros((), dtype=torch.bool, device=dev)  # the step just given is a recall step
        self.recall_sum = torch.zeros((), dtype=torch.float64, device=dev)  # bits of the recall steps since the last metrics
        self.recall_count = torch.zeros((), dtype=torch.long, device=dev)

    @staticmethod
    def io_sizes(pattern_bits: int) -> tuple[int, int]:
        """(input width bits + 1, classes 2^bits + 1)."""
        return pattern_bits + 1, 2**pattern_bits + 1

    @classmethod
    def check_options(cls, pattern_length, pattern_bits, pad_length) -> None:
        for name, v, low in (("pattern_length", pattern_length, 1), ("pattern_bits", pattern_bits, 1),
                             ("pad_length", pad_length, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"copy-pad: {name} must be an int >= {low}, got {v!r}")
        if pattern_bits > cls.MAX_BITS:
            raise ValueError(f"copy-pad: pattern_bits must be at most {cls.MAX_BITS} (2^bits + 1 classes), "
                             f"got {pattern_bits}")

    @classmethod
    def check_config(cls, config, aligned: bool = False) -> None:
        cls.check_options(config.pattern_length, config.pattern_bits, config.pad_length)

    @classmethod
    def config_sizes(cls, config) -> tuple[int, int]:
        return cls.io_sizes(config.pattern_bits)

    @classmethod
    def buffer_bytes(cls, config) -> int:
        return 8 * (config.batch + config.pattern_bits + 8)

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "PaddedCopyTask":
        return cls(config.batch, seed=config.seed, device=device, pattern_length=config.pattern_length,
                   pattern_bits=config.pattern_bits, pad_length=config.pad_length)

    @property
    def aligned_starts(self) -> bool:
        return True

    def next(self):
        """(x (B, bits + 1), y (B,) targets, starts (B,) bool) for the next time step."""
        P, pos = self.pattern_length, self.position
        start = pos == 0
        self.sequence.add_(start.long())
        reading = pos < P
        self._recalling.copy_(pos >= self.recall_start)
        # symbol i of this sequence: read at step i, recalled at step recall_start + i
        i = torch.where(reading, pos, (pos - self.recall_start).clamp(0, P - 1))
        symbol = hash_bits(self._key, self.sequence, self._lane_base + i).bitwise_and_(self.blank - 1)  # (B,)
        channels = (symbol[:, None] // self._bit_values).remainder_(2) * reading  # (B, bits)
        stop = (pos == P + self.pad_length).expand(self.batch_size, 1)
        x = torch.cat([channels, stop], dim=1).to(self.dtype)
        y = torch.where(self._recalling, symbol, torch.full_like(symbol, self.blank))
        self.position.add_(1).remainder_(self.sequence_length)
        return x, y, start.expand(self.batch_size)

    def sequences_end(self) -> bool:
        return bool(self.position == 0)

    def observe(self, losses_nats: torch.Tensor) -> torch.Tensor:
        """The batch loss in bits (a 0-dim device tensor); the recall steps' loss is summed apart."""
        loss_bits = losses_nats.mean().double() / math.log(2)
        self.recall_sum.add_(torch.where(self._recalling, loss_bits, torch.zeros_like(loss_bits)))
        self.recall_count.add_(self._recalling.long())
        return loss_bits

    def metrics(self) -> dict:
        """``recall_bits``: mean loss of the recall steps since the last metrics line, bits per symbol."""
        count = int(self.recall_count)
        row = {"recall_bits": round(float(self.recall_sum) / count, 6) if count else None}
        self.recall_sum.zero_()
        self.recall_count.zero_()
        return row

    _STATE = ("position", "sequence", "_recalling", "recall_sum", "recall_count")

    def state_dict(self) -> dict:
        return {name: getattr(self, name).clone() for name in self._STATE} | {
            "seed": self.seed, "options": (self.pattern_length, self.pattern_bits, self.pad_length)}

    def load_state_dict(self, state: dict) -> None:
        if (state["seed"], tuple(state["options"])) != (self.seed, (self.pattern_length, self.pattern_bits,
                                                                    self.pad_length)):
            raise ValueError("copy-pad task state is for another seed or other pattern options")
        for name in self._STATE:
            getattr(self, name).copy_(state[name])
