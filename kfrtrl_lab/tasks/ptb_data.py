"""Character-level Penn Treebank data: locate or download, verify, tokenise.

Data: ``ptb.char.{train,valid,test}.txt``, the split of Mikolov et al. as shipped in
``simple-examples.tgz`` (``data/`` folder). One sentence a line, characters separated by
single spaces, ``_`` marks a word boundary. Each line becomes its characters followed by the
end-of-line token ``<eos>``, which gives the usual 50-symbol vocabulary.

    ptb = load_ptb()                      # finds, downloads if needed, verifies SHA-256
    ptb.train, ptb.valid, ptb.test        # 1-D LongTensors of token ids; ptb.vocab

Folder lookup order: the ``data_dir`` argument, then ``$KFRTRL_PTB_DIR``, then the per-user
cache ``$XDG_CACHE_HOME/kfrtrl_lab/ptb`` (default ``~/.cache/kfrtrl_lab/ptb``).
"""

from __future__ import annotations

import contextlib
import hashlib
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
    if folder.exists() and not folder.is_dir():
        raise PTBNotFoundError(f"{folder} is a file, not a folder: the PTB data folder (--data-dir, "
                               f"${ENV_VAR}) must be the folder that holds {', '.join(PTB_FILES.values())}")
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
            from_env = data_dir is None and bool(os.environ.get(ENV_VAR))
            raise PTBNotFoundError(_how_to_get(folder, url, f"{type(exc).__name__}: {exc}", missing, from_env)) from exc
    for name in PTB_FILES.values():
        _verified_bytes(folder / name, url)
    return folder


def _how_to_get(folder: Path, url: str, reason: str, missing: list[str], from_env: bool = False) -> str:
    """One line: the files missing (only those), where, why they could not be fetched, what to do."""
    return (
        f"character-level Penn Treebank: {', '.join(missing)} missing from {folder} and could not be "
        f"downloaded from {url} ({reason}); put {'it' if len(missing) == 1 else 'them'} there (from "
        f"simple-examples/data/ in that archive) "
        + (f"(that folder comes from the environment variable {ENV_VAR}), " if from_env else
           f"or set the environment variable {ENV_VAR} to a folder that holds them, ")
        + "or point to such a folder with --data-dir on the command line (data_dir= in Python)"
    )


def _verified_bytes(path: Path, url: str = PTB_URL) -> bytes:
    """The file's contents, after checking its SHA-256 (or finding it in the cache)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            # fstat on the open file, so the cache key describes the bytes actually read.
            st = os.fstat(f.fileno())
    except PermissionError as err:
        raise PermissionError(f"{path} cannot be read ({err.strerror}): give the PTB files read permission "
                              f"for this user, or use a copy with --data-dir") from None
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
            raise PTBNotFoundError(_how_to_get(folder, url, f"the archive has no data/{', data/'.join(absent)}",
                                              absent))
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

TOKEN_LAYOUTS = ("plain", "official")


def tokenize(text: str, layout: str = "plain") -> list[str]:
    """Each line's space-separated characters, then ``<eos>`` for its newline.

    A final fragment without a newline (the files end in ``"\\n "``) adds no ``<eos>``.
    ``layout="official"`` writes the OK code's token stream instead: a word boundary "_" on both
    sides of every ``<eos>`` (none after the last), 2 symbols more per line — 399,781 validation
    symbols instead of 393,042, which lowers a model's BPC by about 0.03 (the extra "_" are easy).
    """
    if layout not in TOKEN_LAYOUTS:
        raise ValueError(f"token layout must be one of {TOKEN_LAYOUTS}, got {layout!r}")
    eos = f" {EOS} " if layout == "plain" else f" _ {EOS} _ "
    # Turning each newline into a spaced-out <eos> lets one whitespace split do both jobs.
    tokens = text.replace("\n", eos).split()
    if layout == "official" and tokens and tokens[-1] == "_":
        tokens.pop()
    return tokens


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


def load_ptb(data_dir: str | os.PathLike | None = None, url: str = PTB_URL, layout: str = "plain") -> PTB:
    """Load character-level PTB (finding/downloading it with :func:`find_ptb`), every file verified,
    tokenised with ``layout`` (see :func:`tokenize`)."""
    folder = find_ptb(data_dir, url)
    tokens = {split: tokenize(_verified_bytes(folder / name, url).decode("ascii"), layout)
              for split, name in PTB_FILES.items()}
    vocab = Vocabulary.from_tokens(tokens["train"])
    return PTB(**{split: vocab.encode(toks) for split, toks in tokens.items()}, vocab=vocab)


