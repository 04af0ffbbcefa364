"""Crash safety: a SIGKILL in the middle of checkpoint writing never leaves a checkpoint that fails to load.

A server process (tests/helpers/checkpoint_writer.py) imports torch once and forks writers that save
8 MiB checkpoints to one path in a loop, one generation after another, each a few tens of ms. A test
starts a writer, waits for its first save (or not), sleeps a seeded random fraction of a few saves and
SIGKILLs it; the kill lands while a payload is built, while the temp file is written or fsync'ed, around
the rename, or between saves. After the kill the checkpoint must load, hold one whole generation (its
tensors match its `generation` field), and be no older than the last save the writer finished; the temp
file of the interrupted save may stay beside it.

The same kill test against a writer that `torch.save`s straight onto the path refuses at least once:
that is what shows the test can fail (and prefixes of a whole checkpoint, what such a kill leaves, are
refused in one line, deterministically). SIGKILL leaves the page cache alone, so these tests check the
temp-file-and-rename protocol, not the fsyncs (those matter for power loss).
"""

from __future__ import annotations

import os
import queue
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import asyncdqn
from asyncdqn import checkpoint
from asyncdqn.errors import UserError
from helpers.checkpoint_writer import payload

HELPER = Path(__file__).parent / "helpers" / "checkpoint_writer.py"
TEMP = re.compile(re.escape(f".{checkpoint.FILENAME}.") + r".+\.tmp")
KILL_POINTS = 20        # atomic writer, each after a finished save
FIRST_SAVE_POINTS = 5   # atomic writer, killed before its first save has surely finished
PLAIN_TRIES = 20        # plain writer: kills until one leaves a file that load refuses
WAIT_S = 30.0           # bound on every wait for the server (a loaded machine is slow, not stuck)


class WriterServer:
    """Talks to the helper server: starts writers, follows the generations they report, kills them."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        # the helper runs on the same asyncdqn source that this process imports
        env["PYTHONPATH"] = os.pathsep.join([str(Path(asyncdqn.__file__).resolve().parents[1]),
                                             *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen([sys.executable, str(HELPER)], cwd=HELPER.parents[2], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.saved: dict[int, list[tuple[int, float]]] = {}  # pid -> [(generation, seconds)] reported

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.split())
        self.lines.put(None)

    def _until(self, *want: str) -> list[str]:
        """Consume the server's lines, recording saves, until one starts with the words `want`; return it."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                words = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {' '.join(want)!r} from the writer server in {WAIT_S} s") from None
            assert words is not None, f"the checkpoint writer server exited ({self.proc.wait()})"
            assert words[0] != "error", f"a writer failed: {' '.join(words)}"
            if words[0] == "saved":
                self.saved.setdefault(int(words[1]), []).append((int(words[2]), float(words[3])))
            if tuple(words[:len(want)]) == want:
                return words

    def _send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def start(self, mode: str, path: Path) -> int:
        self._send(f"start {mode} {path}")
        return int(self._until("started")[1])

    def wait_saves(self, pid: int, count: int) -> None:
        while len(self.saved.get(pid, [])) < count:
            self._until("saved", str(pid))

    def kill(self, pid: int) -> int:
        """SIGKILL the writer; return the last generation it reported saved (0: none). The server
        answers after reaping it, and the writer's own lines come before that answer."""
        self._send(f"kill {pid}")
        self._until("killed", str(pid))
        return max((g for g, _ in self.saved.pop(pid, [])), default=0)

    def close(self) -> None:
        self.proc.stdin.close()  # the server kills what is left and exits
        self.proc.wait(timeout=WAIT_S)
        self.reader.join(timeout=WAIT_S)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server():
    s = WriterServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def save_s(server, tmp_path_factory) -> float:
    """How long one save takes here (median of a few), to spread the kill points over a few saves."""
    pid = server.start("atomic", tmp_path_factory.mktemp("calibrate") / checkpoint.FILENAME)
    server.wait_saves(pid, 5)
    seconds = statistics.median(s for _, s in server.saved[pid])
    server.kill(pid)
    return seconds


def files_of(folder: Path) -> tuple[list[str], list[str]]:
    """(the checkpoint if there is one, leftover temp files); anything else fails the test."""
    names = sorted(os.listdir(folder)) if folder.exists() else []
    temps = [n for n in names if TEMP.fullmatch(n)]
    others = [n for n in names if n not in temps]
    assert others in ([], [checkpoint.FILENAME]), f"unexpected files {others}"
    return others, temps


def assert_intact(folder: Path, last_saved: int, *, may_be_missing: bool = False) -> int:
    """The checkpoint in `folder` loads, holds one whole generation, and is the last finished save or
    the one after it (killed after its rename, before it reported); return its generation."""
    ckpts, temps = files_of(folder)
    assert len(temps) <= 1, f"one kill interrupts at most one save: {temps}"
    if not ckpts:
        assert may_be_missing and last_saved == 0, f"no checkpoint, yet generation {last_saved} was saved"
        return 0
    ckpt = checkpoint.load(folder)  # raises a UserError if the kill damaged it
    generation = ckpt["generation"]
    assert last_saved <= generation <= last_saved + 1 and generation >= 1
    expected = payload(generation)
    for key in ("fill", "ramp"):
        assert torch.equal(ckpt[key], expected[key]), f"{key} of generation {generation} is damaged"
    return generation


def kill_after_first_save(server: WriterServer, mode: str, folder: Path, rng: random.Random,
                          save_s: float) -> int:
    """Start a writer, wait until a save finished, kill it a random 0..3 saves later; return the last
    generation it reported saved."""
    pid = server.start(mode, folder / checkpoint.FILENAME)
    server.wait_saves(pid, 1)
    time.sleep(rng.uniform(0.0, 3.0 * save_s))
    return server.kill(pid)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", range(KILL_POINTS))
def test_sigkill_mid_save_leaves_a_loadable_checkpoint(server, save_s, tmp_path, seed):
    last_saved = kill_after_first_save(server, "atomic", tmp_path, random.Random(seed), save_s)
    assert last_saved >= 1
    assert_intact(tmp_path, last_saved)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("seed", range(FIRST_SAVE_POINTS))
def test_sigkill_during_the_first_save_leaves_no_checkpoint_or_a_loadable_one(server, save_s, tmp_path, seed):
    folder = tmp_path / "run"  # not there yet: save creates it
    pid = server.start("atomic", folder / checkpoint.FILENAME)
    # a forked writer's first payload is slower than the rest (fresh pages), so most kills land in it
    time.sleep(random.Random(1000 + seed).uniform(0.0, 1.2 * save_s))
    assert_intact(folder, server.kill(pid), may_be_missing=True)


@pytest.mark.timeout(90)
def test_the_kill_test_catches_a_writer_that_saves_in_place(server, save_s, tmp_path):
    # torch.save straight onto the path truncates it first, so most kills leave a partial file
    rng = random.Random(2024)
    refusals = []
    for attempt in range(PLAIN_TRIES):
        folder = tmp_path / str(attempt)
        last_saved = kill_after_first_save(server, "plain", folder, rng, save_s)
        try:
            assert_intact(folder, last_saved)
        except UserError as exc:
            refusals.append(str(exc))
            break
    assert refusals, f"{PLAIN_TRIES} kills of an in-place writer all left a loadable checkpoint"
    assert len(refusals[0].splitlines()) == 1 and "corrupt or truncated checkpoint" in refusals[0]


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.25, 0.5, 0.75, 0.999])
def test_a_checkpoint_cut_short_is_refused_in_one_line(tmp_path, keep):
    # What an in-place write leaves after a kill, made deterministically: a prefix of a whole checkpoint.
    whole = tmp_path / "whole.pt"
    checkpoint.save(whole, payload(3))
    data = whole.read_bytes()
    cut = tmp_path / checkpoint.FILENAME
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(UserError) as info:
        checkpoint.load(cut)
    assert len(str(info.value).splitlines()) == 1 and "corrupt or truncated checkpoint" in str(info.value)


def test_atomic_writes_leave_a_0644_file_and_no_temp_file(tmp_path):
    # mkstemp creates 0600; run files, reports, exports and recordings are meant to be read by others
    import stat

    target = tmp_path / "sub" / "summary.json"
    checkpoint.atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]
