"""DPSGD checkpoints: a content hash checked on load, clear errors, no stray temporary files."""

import os
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import research_ext.privacy as privacy
from research_ext.errors import CheckpointError, ResearchExtError


def _dp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    dp = privacy.DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=nn.CrossEntropyLoss(),
        max_grad_norm=1.0,
        delta=1e-5,
        sample_rate=0.25,
        dataset_size=32,
        noise_multiplier=1.0,
        accountant="rdp",
        generator=torch.Generator().manual_seed(seed),
    )
    return model, dp


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def _saved(tmp_path):
    model, dp = _dp()
    g = torch.Generator().manual_seed(1)
    dp.step((torch.randn(8, 6, generator=g), torch.randint(3, (8,), generator=g)))
    path = tmp_path / "run.ckpt"
    dp.save(path)
    return path


def _refused(path, match):
    model, dp = _dp(seed=5)
    before = _weights(model)
    with pytest.raises(CheckpointError, match=match) as info:
        dp.load(path)
    assert str(path) in str(info.value)  # the message names the file
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model), strict=True))
    assert dp.steps == 0


def test_round_trip_restores_the_run(tmp_path):
    path = _saved(tmp_path)
    model, dp = _dp(seed=5)
    dp.load(path)
    assert dp.steps == 1
    reference, _ = _dp()  # same init, not stepped: the loaded weights are the stepped ones
    assert not all(
        torch.equal(a, b) for a, b in zip(_weights(reference), _weights(model), strict=True)
    )


def test_flipping_64_bytes_mid_file_is_detected(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))
    _refused(path, r"content hash")


@pytest.mark.parametrize("offset", [1, 100, 1000])
def test_a_single_flipped_byte_anywhere_is_detected(tmp_path, offset):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-offset] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(path, r"content hash|header")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_file(tmp_path, keep):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    _refused(path, r"truncated")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    _refused(path, r"is empty")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(os.urandom(4096))
    _refused(path, r"not a DPSGD checkpoint")


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"model": nn.Linear(6, 3).state_dict()}, path)
    _refused(path, r"not a DPSGD checkpoint")


def test_checkpoint_error_is_catchable():
    assert issubclass(CheckpointError, ResearchExtError)


def _dead_pid():
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(process.stdout)


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    # what interrupted saves leave behind: temp files of processes that no longer run
    stale = [tmp_path / f".dpsgd-{_dead_pid()}-x{i}.tmp" for i in range(3)]
    stale.append(tmp_path / ".dpsgd-legacy0123.tmp")  # the older naming, without a pid
    live = tmp_path / f".dpsgd-{os.getppid()}-live.tmp"  # a running process may still write it
    other = tmp_path / "notes.tmp"
    for f in [*stale, live, other]:
        f.write_bytes(b"partial")
    _, dp = _dp()
    dp.save(tmp_path / "run.ckpt")
    left = sorted(f.name for f in tmp_path.iterdir())
    assert left == sorted([live.name, other.name, "run.ckpt"])


@pytest.mark.slow
def test_killed_saves_leave_nothing_after_the_next_save(tmp_path):
    code = (
        "import os, signal, torch, sys\n"
        "sys.path.insert(0, os.getcwd())\n"
        "from tests.privacy.test_checkpoints import _dp\n"
        "_, dp = _dp()\n"
        "def dying(fd):\n"  # killed while the temporary file is open, before the rename
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.fsync = dying\n"
        f"dp.save({str(tmp_path / 'run.ckpt')!r})\n"
    )
    for _ in range(3):
        subprocess.run([sys.executable, "-c", code], check=False)
        # each interrupted save cleans up after the previous one: at most the last one's file
        strays = [f for f in tmp_path.iterdir() if re.match(r"\.dpsgd-.*\.tmp$", f.name)]
        assert len(strays) == 1
    _, dp = _dp()
    dp.save(tmp_path / "run.ckpt")
    assert [f.name for f in tmp_path.iterdir()] == ["run.ckpt"]
