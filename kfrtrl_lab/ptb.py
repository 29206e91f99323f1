"""Character-level Penn Treebank: locate/download, verify, tokenise, batch, and score in BPC.

Data: ``ptb.char.{train,valid,test}.txt``, the split of Mikolov et al. as shipped in
``simple-examples.tgz`` (``data/`` folder). One sentence a line, characters separated by
single spaces, ``_`` marks a word boundary. Each line becomes its characters followed by the
end-of-line token ``<eos>``, which gives the usual 50-symbol vocabulary.

    ptb = load_ptb()                      # finds, downloads if needed, verifies SHA-256
    stream = PTBStream(ptb.train, batch_size=32, vocab_size=len(ptb.vocab), reset_every=None)
    x_t, y_t, reset = next(stream)        # one-hot (B, 50), targets (B,), reset mask (B,)
    evaluate_bpc(model, ptb.valid)        # bits per character

Folder lookup order: the ``data_dir`` argument, then ``$KFRTRL_PTB_DIR``, then the per-user
cache ``$XDG_CACHE_HOME/kfrtrl_lab/ptb`` (default ``~/.cache/kfrtrl_lab/ptb``).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import tarfile
import tempfile
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

import torch
import torch.nn.functional as F

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_FILES = {"train": "ptb.char.train.txt", "valid": "ptb.char.valid.txt", "test": "ptb.char.test.txt"}
PTB_SHA256 = {
    "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
    "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
    "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
}
ENV_VAR = "KFRTRL_PTB_DIR"
EOS = "<eos>"
DOWNLOAD_TIMEOUT_S = 60

# Files whose SHA-256 already matched, keyed by (path, size, mtime_ns): hashing the 10 MB train
# file on every load is wasted work, but any rewrite changes size or mtime and re-triggers it.
_VERIFIED: set[tuple[str, int, int]] = set()


class PTBNotFoundError(FileNotFoundError):
    """The PTB files are not in the folder and could not be downloaded."""


class PTBChecksumError(ValueError):
    """A PTB file (on disk or in a downloaded archive) does not have the expected SHA-256."""


# -- locating, downloading and verifying ------------------------------------------------------

def resolve_ptb_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder :func:`find_ptb` uses: ``data_dir``, else ``$KFRTRL_PTB_DIR``, else the user cache.

    Nothing is checked or created here.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return cache / "kfrtrl_lab" / "ptb"


def find_ptb(data_dir: str | os.PathLike | None = None, url: str = PTB_URL) -> Path:
    """Return the folder holding the three verified ``ptb.char.*.txt`` files.

    Files missing from the folder (see :func:`resolve_ptb_dir`) are downloaded from ``url``
    (the ``simple-examples.tgz`` archive), only ``data/ptb.char.*.txt`` is taken from it, and
    each is verified before it is moved into place atomically. Every file is then checked
    against :data:`PTB_SHA256`.

    Raises :class:`PTBNotFoundError` when files are missing and the download fails, and
    :class:`PTBChecksumError` when a file on disk or in the archive has the wrong SHA-256.
    """
    folder = resolve_ptb_dir(data_dir)
    missing = [name for name in PTB_FILES.values() if not (folder / name).is_file()]
    if missing:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _fetch(url, folder, missing)
        except PTBNotFoundError:
            raise
        except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
            # URLError, refused connections and timeouts are all OSError; a cut-off download
            # surfaces as a tar/gzip error.
            raise PTBNotFoundError(_how_to_get(folder, url, f"{type(exc).__name__}: {exc}")) from exc
    for name in PTB_FILES.values():
        _verified_bytes(folder / name, url)
    return folder


def _how_to_get(folder: Path, url: str, reason: str) -> str:
    names = "\n".join(f"    {name}" for name in PTB_FILES.values())
    return (
        f"Character-level Penn Treebank files are missing from {folder} and could not be "
        f"downloaded from {url} ({reason}).\n"
        f"Put these three files (simple-examples/data/ptb.char.*.txt inside {url}):\n{names}\n"
        f"into the folder {folder}\n"
        f"or set the environment variable {ENV_VAR} (or pass data_dir=) to a folder that holds them."
    )


def _verified_bytes(path: Path, url: str = PTB_URL) -> bytes:
    """The file's contents, after checking its SHA-256 (or finding it in the cache)."""
    with open(path, "rb") as f:
        data = f.read()
        # fstat on the open file, so the cache key describes the bytes actually read.
        st = os.fstat(f.fileno())
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        expected, actual = PTB_SHA256[path.name], hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise PTBChecksumError(
                f"{path} is truncated or altered: SHA-256 {actual}, expected {expected}. "
                f"Do not use it: delete it and load again to re-download it from {url}, "
                f"or replace it with data/{path.name} from that archive."
            )
        _VERIFIED.add(key)
    return data


def _fetch(url: str, folder: Path, names: list[str]) -> None:
    """Download the archive next to its destination, then extract and verify ``names``."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".simple-examples.", suffix=".tgz.part")
    os.close(fd)
    archive = Path(tmp)
    try:
        print(f"Downloading character-level PTB from {url} to {folder}", file=sys.stderr)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(archive, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress(total, "simple-examples.tgz") as advance:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    advance(len(chunk))
        _extract(archive, folder, names, url)
    finally:
        archive.unlink(missing_ok=True)


def _member_name(member: tarfile.TarInfo, names: list[str]) -> str | None:
    """The wanted file name a member provides, or None.

    Only regular files named ``.../data/<wanted name>`` count; links, absolute names and names
    with ``..`` are skipped. The output path is built from our own name list, never from the
    member's, so nothing can be written outside the folder.
    """
    path = PurePosixPath(member.name)
    if not member.isfile() or path.is_absolute() or ".." in path.parts:
        return None
    if len(path.parts) >= 2 and path.parts[-2] == "data" and path.name in names:
        return path.name
    return None


def _extract(archive: Path, folder: Path, names: list[str], url: str) -> None:
    # Stage every file and check them all before moving any into place, so a bad archive
    # leaves the folder as it was.
    staged: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = _member_name(member, names)
                if name is None or name in staged:
                    continue
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
                staged[name] = Path(tmp)
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, tar.extractfile(member) as src:
                    while chunk := src.read(1 << 16):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != PTB_SHA256[name]:
                    raise PTBChecksumError(
                        f"data/{name} in the archive from {url} has SHA-256 {digest.hexdigest()}, "
                        f"expected {PTB_SHA256[name]}: the download is corrupt or not the expected "
                        f"archive. Nothing was written to {folder}; put the original files there by hand."
                    )
        absent = [name for name in names if name not in staged]
        if absent:
            raise PTBNotFoundError(_how_to_get(folder, url, f"the archive has no data/{', data/'.join(absent)}"))
        for name, tmp in staged.items():
            os.replace(tmp, folder / name)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _progress(total: int | None, label: str):
    """Yield ``advance(n_bytes)``: a tqdm bar if tqdm is installed, else a line on stderr every 2 s."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label) as bar:
            yield bar.update
        return
    done, last = 0, time.monotonic()

    def report():
        of = f" of {total / 1e6:.1f}" if total else ""
        print(f"{label}: {done / 1e6:.1f}{of} MB", file=sys.stderr)

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= 2:
            last = time.monotonic()
            report()

    yield advance
    report()


# -- tokens and vocabulary ---------------------------------------------------------------------

def tokenize(text: str) -> list[str]:
    """Each line's space-separated characters, then ``<eos>`` for its newline.

    A final fragment without a newline (the files end in ``"\\n "``) adds no ``<eos>``.
    """
    # Turning each newline into a spaced-out <eos> lets one whitespace split do both jobs.
    return text.replace("\n", f" {EOS} ").split()


@dataclass(frozen=True)
class Vocabulary:
    """Symbols in sorted order; a symbol's id is its position."""

    symbols: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "index", {s: i for i, s in enumerate(self.symbols)})

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> "Vocabulary":
        return cls(tuple(sorted(set(tokens))))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Token strings -> 1-D LongTensor of ids."""
        try:
            return torch.tensor([self.index[s] for s in tokens], dtype=torch.long)
        except KeyError as exc:
            raise ValueError(f"symbol {exc.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Ids -> readable text: ``_`` becomes a space and ``<eos>`` a newline."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        readable = {"_": " ", EOS: "\n"}
        return "".join(readable.get(s, s) for s in (self.symbols[i] for i in ids))


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous
class PTB:
    """The three splits as 1-D LongTensors of token ids, and the vocabulary built from train."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocabulary

    def __getitem__(self, split: str) -> torch.Tensor:
        if split not in PTB_FILES:
            raise KeyError(f"split must be one of {sorted(PTB_FILES)}, got {split!r}")
        return getattr(self, split)


def load_ptb(data_dir: str | os.PathLike | None = None, url: str = PTB_URL) -> PTB:
    """Load character-level PTB (finding/downloading it with :func:`find_ptb`), every file verified."""
    folder = find_ptb(data_dir, url)
    tokens = {split: tokenize(_verified_bytes(folder / name, url).decode("ascii"))
              for split, name in PTB_FILES.items()}
    vocab = Vocabulary.from_tokens(tokens["train"])
    return PTB(**{split: vocab.encode(toks) for split, toks in tokens.items()}, vocab=vocab)


# -- batching and evaluation -------------------------------------------------------------------

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
    h = torch.zeros(n_lanes, model.hidden_size, dtype=weight.dtype, device=device)
    # Summed in float64: a float32 running sum over ~10^5 steps would lose digits.
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(length - 1):
        h = model.cell(one_hot[data[:, t]], h)
        total += model.lane_losses(h, data[:, t + 1]).sum(dtype=torch.float64)
    return total.item() / (n_lanes * (length - 1)) / math.log(2)


@torch.no_grad()
def generate_text(model, vocab: Vocabulary, length: int = 300, prime: str = "the_", temperature: float = 1.0,
                  seed: int = 0) -> str:
    """Sample ``length`` characters from ``model`` after feeding it ``prime`` (PTB's spelling:
    "_" between words); returns the readable text (prime included)."""
    weight = model.cell.weight
    g = torch.Generator(device=weight.device).manual_seed(seed)
    one_hot = torch.eye(model.input_size, dtype=weight.dtype, device=weight.device)
    h = torch.zeros(1, model.hidden_size, dtype=weight.dtype, device=weight.device)
    ids = vocab.encode(list(prime)).tolist()
    out = list(ids)
    for i in range(len(ids) + length - 1):
        token = ids[i] if i < len(ids) else out[-1]
        h = model.cell(one_hot[token][None], h)
        if i >= len(ids) - 1:
            probs = torch.softmax(model.logits(h)[0] / temperature, dim=0)
            out.append(int(torch.multinomial(probs, 1, generator=g)))
    return vocab.decode(out)


class PTBTask:
    """Character-level PTB as an online training task (algorithms.md, section 7).

    B contiguous streams through the training text, state and influence reset every
    ``reset_every`` characters; :meth:`evaluate` gives BPC on valid/test with the state carried.
    Same protocol as :class:`~kfrtrl_lab.copy_task.CopyTask` (next, observe, metrics, state_dict).
    """

    def __init__(self, batch_size: int, reset_every: int | None = 100, data_dir=None, device="cpu",
                 dtype: torch.dtype = torch.float32):
        self.data = load_ptb(data_dir)
        self.vocab = self.data.vocab
        self.vocab_size = len(self.vocab)
        self.stream = PTBStream(self.data.train, batch_size, self.vocab_size, reset_every, device, dtype)

    def next(self):
        return next(self.stream)

    def observe(self, losses_nats: torch.Tensor) -> float:
        """Training loss of the step in bits per character."""
        return float(losses_nats.mean()) / math.log(2)

    def metrics(self) -> dict:
        return {"epoch": round(self.stream.epoch + self.stream.t / self.stream.steps_per_epoch, 4)}

    def evaluate(self, model, split: str = "valid", batch_size: int = 32) -> dict:
        return {f"{split}_bpc": evaluate_bpc(model, self.data[split], batch_size=batch_size)}

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
