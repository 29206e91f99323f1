"""Character-level PTB: verified loading, download/extraction, no-network errors, batching, BPC."""

import functools
import hashlib
import http.server
import io
import math
import os
import socket
import tarfile
import threading
from pathlib import Path

import pytest
import torch

import kfrtrl_lab as kl
from conftest import make_model
from kfrtrl_lab.tasks import ptb, ptb_data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ptb"
NAMES = list(ptb_data.PTB_FILES.values())


@pytest.fixture
def closed_url():
    # A bound socket that never listens: connecting is refused at once, and holding it
    # keeps the port from being handed to anything else during the test.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/simple-examples.tgz"


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder, base URL): a local HTTP server over a fresh folder."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a CI machine's http_proxy must not take these requests
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    # A short poll interval keeps shutdown() (which waits for one poll) from costing 0.5 s a test.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def real_ptb():
    if not all((SHARED / n).is_file() for n in NAMES):
        pytest.skip(f"no verified PTB copy at {SHARED}")
    return ptb_data.load_ptb(data_dir=SHARED, url="http://127.0.0.1:9/unused")


@pytest.fixture
def fake_files(monkeypatch):
    """Small stand-ins for the three files, with their own SHA-256 sums put in the package's place:
    the download, archive and checksum tests need no copy of the real data."""
    texts = {name: "".join(f" {c} _ {c}{c} \n" for c in "abc" * (i + 3)).encode() + b" "
             for i, name in enumerate(NAMES)}
    monkeypatch.setattr(ptb_data, "PTB_SHA256", {n: hashlib.sha256(t).hexdigest() for n, t in texts.items()})
    return texts


def write_files(folder, files, names=NAMES):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(files[name])


def make_archive(path, members):
    """members: (name, bytes) for regular files, (name, ("symlink", target)) for links."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))


def one_byte_changed(data: bytes, at: int = 100) -> bytes:
    data = bytearray(data)
    data[at] = ord("x") if data[at] != ord("x") else ord("y")
    return bytes(data)


# -- the real files ----------------------------------------------------------------------------

def test_real_files_load_with_50_symbols_and_counted_lengths(real_ptb):
    vocab = real_ptb.vocab
    assert len(vocab) == 50
    assert list(vocab.symbols) == sorted(vocab.symbols) and ptb_data.EOS in vocab.symbols and "_" in vocab.symbols
    eos = vocab.index[ptb_data.EOS]
    for split, name in ptb_data.PTB_FILES.items():
        raw = (SHARED / name).read_bytes()
        assert not any(c in raw for c in b"\t\r")  # spaces and newlines are the only whitespace
        lines = raw.count(b"\n")
        chars = len(raw) - raw.count(b" ") - lines
        ids = real_ptb[split]
        assert ids.dtype == torch.long and ids.shape == (chars + lines,)
        assert int((ids == eos).sum()) == lines
    first_line = (SHARED / "ptb.char.train.txt").read_text().split("\n")[0]
    n = len(first_line.split())
    assert vocab.decode(real_ptb.train[: n + 1]) == first_line.replace(" ", "").replace("_", " ") + "\n"
    assert real_ptb.train.shape == (5017482,)  # the well-known size of PTB-char train (chars + <eos>)


def test_tokenize_and_vocabulary_round_trip():
    assert ptb_data.tokenize("a _ b \n c \n ") == ["a", "_", "b", ptb_data.EOS, "c", ptb_data.EOS]
    vocab = ptb_data.Vocabulary.from_tokens(["b", "_", ptb_data.EOS, "a", "b"])
    assert vocab.symbols == ("<eos>", "_", "a", "b")
    ids = vocab.encode(["a", "_", "b", ptb_data.EOS])
    assert ids.dtype == torch.long and ids.tolist() == [2, 1, 3, 0]
    assert vocab.decode(ids) == "a b\n"
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode(["a", "z"])


# -- checksums -----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_file_is_rejected(tmp_path, closed_url, damage, fake_files):
    write_files(tmp_path, fake_files)
    path = tmp_path / "ptb.char.valid.txt"
    good = path.read_bytes()
    bad = good[: len(good) // 2] if damage == "truncated" else one_byte_changed(good)
    path.write_bytes(bad)
    with pytest.raises(ptb_data.PTBChecksumError) as err:
        ptb_data.load_ptb(data_dir=tmp_path, url=closed_url)
    msg = str(err.value)
    assert str(path) in msg and ptb_data.PTB_SHA256[path.name] in msg and hashlib.sha256(bad).hexdigest() in msg
    assert "delete" in msg


def test_verification_is_cached_but_a_rewrite_is_checked_again(tmp_path, monkeypatch, closed_url, fake_files):
    write_files(tmp_path, fake_files)
    ptb_data.find_ptb(tmp_path, url=closed_url)

    class NoHashing:
        @staticmethod
        def sha256(*args):
            raise AssertionError("a verified, unchanged file was hashed again")

    monkeypatch.setattr(ptb_data, "hashlib", NoHashing)
    ptb_data.find_ptb(tmp_path, url=closed_url)
    monkeypatch.undo()

    path = tmp_path / "ptb.char.test.txt"
    st = path.stat()
    path.write_bytes(one_byte_changed(path.read_bytes()))
    # Same size; move the mtime explicitly so a coarse-timestamp filesystem cannot hide the rewrite.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ptb_data.PTBChecksumError, match="ptb.char.test.txt"):
        ptb_data.find_ptb(tmp_path, url=closed_url)


# -- download ----------------------------------------------------------------------------------

def test_download_extracts_only_the_three_verified_files(tmp_path, server, fake_files):
    root, base = server
    real = fake_files
    make_archive(root / "simple-examples.tgz", [
        # Traversal and link members come first: if they were honoured they would win.
        ("../data/ptb.char.train.txt", b"evil"),
        ("./simple-examples/data/../../../escaped.txt", b"evil"),
        ("/abs/data/ptb.char.valid.txt", b"evil"),
        ("./simple-examples/data/ptb.char.test.txt", ("symlink", "/etc/passwd")),
        ("./simple-examples/data/ptb.train.txt", b"word-level decoy"),
        ("./simple-examples/README", b"decoy"),
        *((f"./simple-examples/data/{n}", real[n]) for n in NAMES),
    ])
    target = tmp_path / "a" / "b" / "c" / "ptb"
    assert ptb_data.find_ptb(target, url=base + "simple-examples.tgz") == target
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)  # no decoys, no temp files
    for n in NAMES:
        assert (target / n).read_bytes() == real[n]
    assert not list(tmp_path.rglob("escaped.txt"))


def test_archive_with_an_altered_file_is_rejected_and_nothing_installed(tmp_path, server, fake_files):
    root, base = server
    real = dict(fake_files)
    real["ptb.char.test.txt"] = one_byte_changed(real["ptb.char.test.txt"])
    make_archive(root / "simple-examples.tgz", [(f"./simple-examples/data/{n}", real[n]) for n in NAMES])
    target = tmp_path / "ptb"
    with pytest.raises(ptb_data.PTBChecksumError, match="ptb.char.test.txt") as err:
        ptb_data.find_ptb(target, url=base + "simple-examples.tgz")
    assert "archive" in str(err.value) and ptb_data.PTB_SHA256["ptb.char.test.txt"] in str(err.value)
    assert list(target.iterdir()) == []


def test_only_missing_files_are_taken_from_the_archive(tmp_path, server, fake_files):
    root, base = server
    target = tmp_path / "ptb"
    write_files(target, fake_files, NAMES[:2])
    test_name = "ptb.char.test.txt"
    member = (f"./simple-examples/data/{test_name}", fake_files[test_name])
    make_archive(root / "simple-examples.tgz", [member])
    assert ptb_data.find_ptb(target, url=base + "simple-examples.tgz") == target
    assert sorted(p.name for p in target.iterdir()) == sorted(NAMES)


def test_bad_download_and_missing_member_give_not_found(tmp_path, server):
    root, base = server
    (root / "page.html").write_bytes(b"<html>not an archive</html>")
    with pytest.raises(ptb_data.PTBNotFoundError, match="ptb.char.train.txt"):
        ptb_data.find_ptb(tmp_path / "a", url=base + "page.html")
    with pytest.raises(ptb_data.PTBNotFoundError, match="404"):
        ptb_data.find_ptb(tmp_path / "b", url=base + "missing.tgz")
    make_archive(root / "empty.tgz", [("./simple-examples/data/ptb.train.txt", b"decoy")])
    with pytest.raises(ptb_data.PTBNotFoundError, match="archive has no data/ptb.char.train.txt"):
        ptb_data.find_ptb(tmp_path / "c", url=base + "empty.tgz")
    for folder in "abc":
        assert list((tmp_path / folder).iterdir()) == []


def test_no_network_names_folder_files_url_and_env_var(tmp_path, closed_url):
    target = tmp_path / "nowhere"
    with pytest.raises(ptb_data.PTBNotFoundError) as err:
        ptb_data.find_ptb(target, url=closed_url)
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    for part in [str(target), closed_url, ptb_data.ENV_VAR, "--data-dir", *NAMES]:
        assert part in msg
    assert list(target.iterdir()) == []  # no half-downloaded archive left behind


# -- where the folder is -----------------------------------------------------------------------

def test_env_var_is_honoured_and_the_argument_wins(tmp_path, monkeypatch, closed_url, fake_files):
    from_env = tmp_path / "from_env"
    monkeypatch.setenv(ptb_data.ENV_VAR, str(from_env))
    assert ptb_data.resolve_ptb_dir() == from_env
    assert ptb_data.resolve_ptb_dir(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(ptb_data.PTBNotFoundError, match=str(from_env)) as err:
        ptb_data.find_ptb(url=closed_url)
    # the folder came from the variable: the message says so rather than asking to set it
    assert f"comes from the environment variable {ptb_data.ENV_VAR}" in str(err.value)
    monkeypatch.setenv(ptb_data.ENV_VAR, str(tmp_path / "verified"))
    write_files(tmp_path / "verified", fake_files)
    assert ptb_data.find_ptb(url=closed_url) == tmp_path / "verified"


def test_cache_fallback_honours_xdg_cache_home_then_home(tmp_path, monkeypatch, closed_url):
    monkeypatch.delenv(ptb_data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "kfrtrl_lab" / "ptb"
    assert ptb_data.resolve_ptb_dir() == expected
    with pytest.raises(ptb_data.PTBNotFoundError, match=str(expected)):
        ptb_data.find_ptb(url=closed_url)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ptb_data.resolve_ptb_dir() == tmp_path / "home" / ".cache" / "kfrtrl_lab" / "ptb"


# -- batching ----------------------------------------------------------------------------------

def test_stream_batches_layout():
    ids = torch.arange(23)
    data = ptb.stream_batches(ids, 3)
    assert data.tolist() == [list(range(0, 7)), list(range(7, 14)), list(range(14, 21))]
    with pytest.raises(ValueError):
        ptb.stream_batches(ids, 24)


def test_ptb_stream_steps_resets_wraparound_and_resume():
    n_tokens, B, L = 23, 3, 7
    stream = ptb.PTBStream(torch.arange(n_tokens), B, vocab_size=n_tokens, reset_every=4)
    assert stream.steps_per_epoch == L - 1
    steps = [next(stream) for _ in range(2 * (L - 1) + 2)]
    for i, (x, y, reset) in enumerate(steps):
        t = i % (L - 1)
        assert x.shape == (B, n_tokens) and x.dtype == torch.float32 and (x.sum(1) == 1).all()
        # Stream b reads tokens b L + t: contiguous within a stream, streams L apart.
        assert x.argmax(1).tolist() == [b * L + t for b in range(B)]
        assert y.tolist() == [b * L + t + 1 for b in range(B)]
        assert reset.shape == (B,) and reset.dtype == torch.bool
        assert reset.tolist() == [t % 4 == 0] * B
    for (_, y, _), (x_next, _, _) in zip(steps[: L - 2], steps[1 : L - 1]):
        assert torch.equal(y, x_next.argmax(1))
    assert stream.epoch == 2 and stream.t == 2

    once = ptb.PTBStream(torch.arange(n_tokens), B, vocab_size=n_tokens)
    assert [bool(next(once)[2][0]) for _ in range(2 * (L - 1))] == ([True] + [False] * (L - 2)) * 2

    state = stream.state_dict()
    expected = [next(stream) for _ in range(9)]
    resumed = ptb.PTBStream(torch.arange(n_tokens), B, vocab_size=n_tokens, reset_every=4)
    resumed.load_state_dict(state)
    for a, b in zip(expected, (next(resumed) for _ in range(9))):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert resumed.state_dict() == stream.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        ptb.PTBStream(torch.arange(n_tokens), 2, vocab_size=n_tokens).load_state_dict(state)


# -- bits per character ------------------------------------------------------------------------

def reference_bpc(model, ids, batch_size):
    """One lane at a time, the loss written out from the readout weights."""
    n, vocab = model.hidden_size, model.input_size
    length = len(ids) // batch_size
    total, count = 0.0, 0
    for b in range(batch_size):
        lane = ids[b * length : (b + 1) * length].tolist()
        state = model.cell.zero_state(1)
        for t in range(length - 1):
            x = torch.zeros(1, vocab, dtype=torch.float64)
            x[0, lane[t]] = 1
            state = model.cell(x, state)
            logits = state[0, 0] @ model.readout[:n] + model.readout[n]
            total += (torch.logsumexp(logits, 0) - logits[lane[t + 1]]).item()
            count += 1
    return total / count / math.log(2)


def test_evaluate_bpc_matches_per_lane_reference(cell_name):
    vocab = 7
    model = make_model(cell_name, m=vocab, n=5, k=vocab, std=0.5)
    ids = torch.randint(0, vocab, (3 * 9 + 2,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference_bpc(model, ids, batch_size=3)
    assert ptb.evaluate_bpc(model, ids, batch_size=3) == pytest.approx(expected, rel=1e-12)


def test_evaluate_bpc_of_zero_readout_is_log2_vocab():
    vocab = 50
    model = kl.RecurrentModel(kl.RHN(vocab, 8), vocab).double()
    with torch.no_grad():
        model.readout.zero_()
    ids = torch.randint(0, vocab, (200,), generator=torch.Generator().manual_seed(0))
    assert ptb.evaluate_bpc(model, ids, batch_size=4) == pytest.approx(math.log2(vocab), rel=1e-12)
