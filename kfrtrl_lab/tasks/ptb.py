"""Character-level Penn Treebank as an online task (algorithms.md, section 7): streams, BPC, samples.

    ptb = load_ptb()                      # tasks/ptb_data.py: finds, downloads if needed, verifies
    stream = PTBStream(ptb.train, batch_size=32, vocab_size=len(ptb.vocab), reset_every=100)
    x_t, y_t, reset = next(stream)        # one-hot (B, 50), targets (B,), reset mask (B,)
    evaluate_bpc(model, ptb.valid)        # bits per character, state carried through the split
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .base import EvaluationStopped, Task
from .ptb_data import PTB_FILES, TOKEN_LAYOUTS, Vocabulary, load_ptb


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


STREAM_LAYOUTS = ("contiguous", "staggered")
#: steps of an evaluation pass between two looks at a stop request (a step costs far more than the look)
STOP_POLL = 16


class PTBStream:
    """Endless per-time-step batches of the text for B lanes: ``(x_t, y_t, reset_mask)``, all on the
    device and read back by nothing (so the trainer can run many steps at once).

    ``layout="contiguous"`` (:func:`stream_batches`): lane b reads tokens [b L, (b+1) L); the
    lanes reset together at t % reset_every == 0 (t = 0 included; only at t = 0 when
    ``reset_every`` is None); after L - 1 steps the stream wraps to t = 0 and counts the epoch.

    ``layout="staggered"`` (the official OK code's): lane b starts at offset b·⌊N/B⌋ of the whole
    text and reads on, wrapping around the end; it resets whenever its absolute position in the
    text is a multiple of ``reset_every`` (and at the first step), so the lanes reset at
    staggered steps.

    ``x_t`` is the one-hot (B, vocab_size) input, ``y_t`` (B,) the token after it, ``reset_mask``
    (B,) true where the recurrent state must be zeroed. ``state_dict()``/``load_state_dict()``
    hold the position so a run resumes exactly.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, vocab_size: int, reset_every: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 layout: str = "contiguous"):
        if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
            raise ValueError(f"reset_every must be a positive int or None, got {reset_every!r}")
        if layout not in STREAM_LAYOUTS:
            raise ValueError(f"layout must be one of {STREAM_LAYOUTS}, got {layout!r}")
        if len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size})")
        self.layout, self.vocab_size, self.reset_every, self.dtype = layout, vocab_size, reset_every, dtype
        blocks = stream_batches(ids, batch_size)  # checks the batch size in both layouts (a view of ids)
        self.data = blocks.to(device) if layout == "contiguous" else blocks
        if self.data.shape[1] < 2:
            raise ValueError(f"{len(ids)} tokens give streams of length {self.data.shape[1]}; need at least 2")
        device = torch.device(device) if device is not None else ids.device
        if layout == "staggered":
            self.text = ids.to(device)
            self._offsets = torch.arange(batch_size, device=device) * (len(ids) // batch_size)
        self._eye = torch.eye(vocab_size, device=device, dtype=dtype)
        self._t = torch.zeros((), dtype=torch.long, device=device)  # steps taken (contiguous: within the epoch)
        self._epoch = torch.zeros((), dtype=torch.long, device=device)

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def steps_per_epoch(self) -> int:
        """Steps for the lanes to read the text once."""
        return self.data.shape[1] - 1 if self.layout == "contiguous" else len(self.text) // self.batch_size

    @property
    def t(self) -> int:
        return int(self._t)

    @property
    def epoch(self) -> int:
        return int(self._epoch) if self.layout == "contiguous" else self.t // self.steps_per_epoch

    @property
    def epoch_fraction(self) -> float:
        return self.epoch + (self.t % self.steps_per_epoch if self.layout == "staggered" else self.t) / self.steps_per_epoch

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self._t
        if self.layout == "contiguous":
            x_ids = self.data.index_select(1, t.view(1)).squeeze(1)
            y = self.data.index_select(1, (t + 1).view(1)).squeeze(1)
            phase = t.expand(self.batch_size)
        else:
            position = (self._offsets + t) % len(self.text)
            x_ids, y = self.text[position], self.text[(position + 1) % len(self.text)]
            phase = position
        first = t == 0 if self.layout == "contiguous" else (t == 0).expand(self.batch_size)
        reset = first if self.reset_every is None else (phase % self.reset_every == 0) | first
        reset = reset.expand(self.batch_size)
        t.add_(1)
        if self.layout == "contiguous":  # wrap to the start of the streams
            wrap = t == self.steps_per_epoch
            self._epoch.add_(wrap.long())
            t.masked_fill_(wrap, 0)
        return self._eye[x_ids], y, reset

    def state_dict(self) -> dict:
        return {"t": self.t, "epoch": int(self._epoch), "batch_size": self.batch_size, "length": self.data.shape[1],
                "layout": self.layout}

    def load_state_dict(self, state: dict) -> None:
        # A position only means the same thing over the same layout.
        layout = (state["batch_size"], state["length"], state.get("layout", "contiguous"))
        if layout != (self.batch_size, self.data.shape[1], self.layout):
            raise ValueError(f"state is for (batch_size, length, layout) = {layout}, "
                             f"this stream is {(self.batch_size, self.data.shape[1], self.layout)}")
        if self.layout == "contiguous" and not 0 <= state["t"] < self.steps_per_epoch:
            raise ValueError(f"t = {state['t']} is outside [0, {self.steps_per_epoch})")
        self._t.fill_(int(state["t"]))
        self._epoch.fill_(int(state["epoch"]))


@torch.no_grad()
def evaluate_bpc(model, ids: torch.Tensor, batch_size: int = 32, device: torch.device | str | None = None,
                 stop=None) -> float:
    """Bits per character of ``model`` (a :class:`~kfrtrl_lab.RecurrentModel`) on ``ids``.

    The text is split into ``batch_size`` contiguous streams (:func:`stream_batches`), each run
    from h = 0 with its state carried to the end (no resets). BPC = mean cross-entropy over all
    predicted characters (the L - 1 successors in every stream) / ln 2. ``device`` defaults to
    the model's; the model itself is not moved. ``stop``: a callable polled every
    ``STOP_POLL`` steps; when it returns True the pass ends with :class:`EvaluationStopped`.
    """
    weight = model.cell.recurrent_parameters()[0]
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
        if stop is not None and t % STOP_POLL == 0 and stop():
            raise EvaluationStopped(f"evaluation stopped at step {t} of {length - 1}")
        x = one_hot[data[:, t]]
        state = cell(x, state)
        total += model.lane_losses(cell.layer_output(x, state), data[:, t + 1]).sum(dtype=torch.float64)
    return total.item() / (n_lanes * (length - 1)) / math.log(2)


@torch.no_grad()
def generate_text(model, vocab: Vocabulary, length: int = 300, prime: str = "the_", temperature: float = 1.0,
                  seed: int = 0) -> str:
    """Sample ``length`` characters from ``model`` after feeding it ``prime`` (PTB's spelling:
    "_" between words); returns the readable text (prime included)."""
    weight = model.cell.recurrent_parameters()[0]
    g = torch.Generator(device=weight.device).manual_seed(seed)
    one_hot = torch.eye(model.input_size, dtype=weight.dtype, device=weight.device)
    cell = model.cell
    state = cell.zero_state(1)
    ids = vocab.encode(list(prime)).tolist()
    out = list(ids)
    for i in range(len(ids) + length - 1):
        token = ids[i] if i < len(ids) else out[-1]
        x = one_hot[token][None]
        state = cell(x, state)
        if i >= len(ids) - 1:
            probs = torch.softmax(model.logits(cell.layer_output(x, state))[0] / temperature, dim=0)
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
    options = ("reset_every", "eval_every", "eval_batch", "data_dir", "stream_layout", "tokens")
    SAMPLE = {"length": 400, "prime": "the_", "temperature": 1.0, "seed": 0}
    #: the vocabulary of character-level PTB (either token layout): the sizes a run is planned with
    #: before its data load (the loaded vocabulary sets the instance's)
    input_size = output_size = 50
    #: symbols in the three splits (about 5.6M; each an int64 id, the training text also kept as one-hot rows' ids)
    TOKENS = 5_700_000

    def __init__(self, batch_size: int, reset_every: int | None = 100, data_dir=None, device="cpu",
                 dtype: torch.dtype = torch.float32, layout: str = "contiguous", tokens: str = "plain"):
        self.data = load_ptb(data_dir, layout=tokens)
        self.vocab = self.data.vocab
        self.input_size = self.output_size = self.vocab_size = len(self.vocab)
        self.stream = PTBStream(self.data.train, batch_size, self.vocab_size, reset_every, device, dtype, layout)

    @classmethod
    def buffer_bytes(cls, config) -> int:
        # the ids of the splits and a copy of the training text on the device, plus the token
        # strings while they are read (about 60 bytes each in Python lists)
        return cls.TOKENS * (8 + 8 + 60)

    @classmethod
    def check_config(cls, config, aligned: bool = False) -> None:
        if config.stream_layout not in STREAM_LAYOUTS:
            raise ValueError(f"stream_layout must be one of {STREAM_LAYOUTS}, got {config.stream_layout!r}")
        if config.tokens not in TOKEN_LAYOUTS:
            raise ValueError(f"tokens must be one of {TOKEN_LAYOUTS}, got {config.tokens!r}")
        if config.data_dir is not None:
            # only the default cache folder is created here: a mistyped --data-dir must not grow a
            # folder tree and a download (find_ptb creates the folder it is given)
            folder = Path(config.data_dir).expanduser()
            if not folder.exists():
                raise ValueError(f"--data-dir {config.data_dir}: no such folder; create it (the data are then "
                                 f"downloaded into it) or correct the path")
            if not folder.is_dir():
                raise ValueError(f"--data-dir {config.data_dir} is a file; give the folder that holds "
                                 f"{', '.join(PTB_FILES.values())}")
        if aligned and (config.reset_every is None or config.stream_layout != "contiguous"):
            raise ValueError(f"method {config.method!r} writes its gradient at the end of a sequence: on ptb "
                             f"that is a reset, so give --reset-every N with the contiguous stream layout "
                             f"(the streams then reset together)")

    @classmethod
    def from_config(cls, config, device, aligned: bool = False) -> "PTBTask":
        cls.check_config(config, aligned)
        return cls(config.batch, reset_every=config.reset_every, data_dir=config.data_dir, device=device,
                   layout=config.stream_layout, tokens=config.tokens)

    @property
    def aligned_starts(self) -> bool:
        return self.stream.layout == "contiguous"  # there every stream resets at the same steps

    def next(self):
        return next(self.stream)

    def sequences_end(self) -> bool:
        stream = self.stream  # contiguous layout: the next step resets every lane
        return stream.layout == "contiguous" and stream.reset_every is not None and stream.t % stream.reset_every == 0

    def observe(self, losses_nats: torch.Tensor) -> torch.Tensor:
        """Training loss of the step in bits per character (a 0-dim device tensor)."""
        return losses_nats.mean().double() / math.log(2)

    def metrics(self) -> dict:
        return {"epoch": round(self.stream.epoch_fraction, 4)}

    def evaluate(self, model, split: str = "valid", batch_size: int = 32, stop=None) -> dict:
        if split not in PTB_FILES:
            raise ValueError(f"split must be one of {sorted(PTB_FILES)}, got {split!r}")
        return {f"{split}_bpc": evaluate_bpc(model, self.data[split], batch_size=batch_size, stop=stop)}

    def finish(self, model) -> dict:
        """Text sampled from the trained model (kept in the run summary)."""
        text = generate_text(model, self.vocab, **self.SAMPLE)
        return {"sample_text": {"text": text, **self.SAMPLE}}

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
