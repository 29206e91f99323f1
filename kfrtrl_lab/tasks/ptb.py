"""Character-level Penn Treebank as an online task (algorithms.md, section 7): streams, BPC, samples.

    ptb = load_ptb()                      # tasks/ptb_data.py: finds, downloads if needed, verifies
    stream = PTBStream(ptb.train, batch_size=32, vocab_size=len(ptb.vocab), reset_every=100)
    x_t, y_t, reset = next(stream)        # one-hot (B, 50), targets (B,), reset mask (B,)
    evaluate_bpc(model, ptb.valid)        # bits per character, state carried through the split
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Task
from .ptb_data import PTB_FILES, Vocabulary, load_ptb

def stream_batches(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay the text out as ``batch_size`` contiguous streams, evenly spaced through it.

    The first ``(len // B) * B`` tokens reshaped to (B, L): row b is tokens [b L, (b+1) L).
    The remaining tail (< B tokens) is dropped.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    length = len(ids) // batch_size
    if length == 0:
        raise ValueError(f"{len(ids)} tokens cannot fill {batch_size} streams")
    return ids[: length * batch_size].view(batch_size, length)


class PTBStream:
    """Endless per-time-step batches over :func:`stream_batches`: ``(x_t, y_t, reset_mask)``.

    ``x_t`` is the one-hot (B, vocab_size) input for token t of every stream, ``y_t`` (B,) the
    token after it, and ``reset_mask`` (B,) is true where the recurrent state must be zeroed:
    at t % reset_every == 0 (t = 0 included), or only at t = 0 when ``reset_every`` is None.
    An epoch is L - 1 steps; the stream then wraps to t = 0 (a reset) and counts the epoch.
    ``state_dict()``/``load_state_dict()`` hold the position so a run resumes exactly.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, vocab_size: int, reset_every: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
            raise ValueError(f"reset_every must be a positive int or None, got {reset_every!r}")
        if len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        self.data = stream_batches(ids, batch_size).to(device)
        if self.data.shape[1] < 2:
            raise ValueError(f"{len(ids)} tokens give streams of length {self.data.shape[1]}; need at least 2")
        self.vocab_size, self.reset_every, self.dtype = vocab_size, reset_every, dtype
        self.t = 0
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def steps_per_epoch(self) -> int:
        return self.data.shape[1] - 1

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.t
        x = F.one_hot(self.data[:, t], self.vocab_size).to(self.dtype)
        y = self.data[:, t + 1]
        reset = t == 0 if self.reset_every is None else t % self.reset_every == 0
        mask = torch.full((self.batch_size,), reset, dtype=torch.bool, device=self.data.device)
        self.t += 1
        if self.t == self.steps_per_epoch:
            self.t, self.epoch = 0, self.epoch + 1
        return x, y, mask

    def state_dict(self) -> dict:
        return {"t": self.t, "epoch": self.epoch, "batch_size": self.batch_size, "length": self.data.shape[1]}

    def load_state_dict(self, state: dict) -> None:
        # A position only means the same thing over the same layout.
        layout = (state["batch_size"], state["length"])
        if layout != (self.batch_size, self.data.shape[1]):
            raise ValueError(f"state is for (batch_size, length) = {layout}, "
                             f"this stream is {(self.batch_size, self.data.shape[1])}")
        if not 0 <= state["t"] < self.steps_per_epoch:
            raise ValueError(f"t = {state['t']} is outside [0, {self.steps_per_epoch})")
        self.t, self.epoch = int(state["t"]), int(state["epoch"])


@torch.no_grad()
def evaluate_bpc(model, ids: torch.Tensor, batch_size: int = 32, device: torch.device | str | None = None) -> float:
    """Bits per character of ``model`` (a :class:`~kfrtrl_lab.RecurrentModel`) on ``ids``.

    The text is split into ``batch_size`` contiguous streams (:func:`stream_batches`), each run
    from h = 0 with its state carried to the end (no resets). BPC = mean cross-entropy over all
    predicted characters (the L - 1 successors in every stream) / ln 2. ``device`` defaults to
    the model's; the model itself is not moved.
    """
    weight = model.cell.weight
    device = weight.device if device is None else torch.device(device)
    data = stream_batches(ids, batch_size).to(device)
    n_lanes, length = data.shape
    if length < 2:
        raise ValueError(f"{len(ids)} tokens give streams of length {length}; need at least 2")
    if int(data.max()) >= min(model.input_size, model.output_size):
        raise ValueError(f"token id {int(data.max())} does not fit the model "
                         f"(input_size {model.input_size}, output_size {model.output_size})")
    one_hot = torch.eye(model.input_size, dtype=weight.dtype, device=device)
    cell = model.cell
    state = cell.zero_state(n_lanes)
    # Summed in float64: a float32 running sum over ~10^5 steps would lose digits.
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(length - 1):
        state = cell(one_hot[data[:, t]], state)
        total += model.lane_losses(cell.hidden(state), data[:, t + 1]).sum(dtype=torch.float64)
    return total.item() / (n_lanes * (length - 1)) / math.log(2)


@torch.no_grad()
def generate_text(model, vocab: Vocabulary, length: int = 300, prime: str = "the_", temperature: float = 1.0,
                  seed: int = 0) -> str:
    """Sample ``length`` characters from ``model`` after feeding it ``prime`` (PTB's spelling:
    "_" between words); returns the readable text (prime included)."""
    weight = model.cell.weight
    g = torch.Generator(device=weight.device).manual_seed(seed)
    one_hot = torch.eye(model.input_size, dtype=weight.dtype, device=weight.device)
    cell = model.cell
    state = cell.zero_state(1)
    ids = vocab.encode(list(prime)).tolist()
    out = list(ids)
    for i in range(len(ids) + length - 1):
        token = ids[i] if i < len(ids) else out[-1]
        state = cell(one_hot[token][None], state)
        if i >= len(ids) - 1:
            probs = torch.softmax(model.logits(cell.hidden(state))[0] / temperature, dim=0)
            out.append(int(torch.multinomial(probs, 1, generator=g)))
    return vocab.decode(out)


class PTBTask(Task):
    """Character-level PTB as an online training task (algorithms.md, section 7).

    B contiguous streams through the training text, state and influence reset every
    ``reset_every`` characters; :meth:`evaluate` gives BPC on valid/test with the state carried;
    :meth:`finish` samples text from the trained model for the run summary.
    """

    name = "ptb"
    defaults = {"hidden": 256, "batch": 32}
    evaluates = True
    SAMPLE = {"length": 400, "prime": "the_", "temperature": 1.0, "seed": 0}

    def __init__(self, batch_size: int, reset_every: int | None = 100, data_dir=None, device="cpu",
                 dtype: torch.dtype = torch.float32):
        self.data = load_ptb(data_dir)
        self.vocab = self.data.vocab
        self.input_size = self.output_size = self.vocab_size = len(self.vocab)
        self.stream = PTBStream(self.data.train, batch_size, self.vocab_size, reset_every, device, dtype)

    @classmethod
    def check_config(cls, config, aligned: bool = False) -> None:
        if aligned and config.reset_every is None:
            raise ValueError(f"method {config.method!r} writes its gradient at the end of a sequence: on ptb "
                             f"that is a reset, so give --reset-every N (the streams then reset together)")

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "PTBTask":
        cls.check_config(config, aligned)
        return cls(config.batch, reset_every=config.reset_every, data_dir=config.data_dir, device=device)

    @property
    def aligned_starts(self) -> bool:
        return True  # every stream resets at the same steps

    def next(self):
        return next(self.stream)

    def observe(self, losses_nats: torch.Tensor) -> float:
        """Training loss of the step in bits per character."""
        return float(losses_nats.mean()) / math.log(2)

    def metrics(self) -> dict:
        return {"epoch": round(self.stream.epoch + self.stream.t / self.stream.steps_per_epoch, 4)}

    def evaluate(self, model, split: str = "valid", batch_size: int = 32) -> dict:
        if split not in PTB_FILES:
            raise ValueError(f"split must be one of {sorted(PTB_FILES)}, got {split!r}")
        return {f"{split}_bpc": evaluate_bpc(model, self.data[split], batch_size=batch_size)}

    def finish(self, model) -> dict:
        """Text sampled from the trained model (kept in the run summary)."""
        text = generate_text(model, self.vocab, **self.SAMPLE)
        return {"sample_text": {"text": text, **self.SAMPLE}}

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
