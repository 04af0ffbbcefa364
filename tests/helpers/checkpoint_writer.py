"""A checkpoint writer for tests/test_crash_safety.py to SIGKILL at random points.

Importing torch takes seconds, so one server process imports it once and forks a writer per kill point.
The server reads commands on stdin, one a line, and answers on stdout:

    start MODE PATH  ->  started PID        fork a writer that saves generation 1, 2, ... to PATH
    kill PID         ->  killed PID         SIGKILL the writer and reap it: it is gone when this line comes
    (end of input)                          kill the writers still running and exit

A writer prints `saved PID GEN SECONDS` after each save returns (SECONDS: building the payload plus
saving it). Every line is one `os.write` of less than PIPE_BUF bytes, so lines from the server and its
writers never interleave, and a writer's lines all come before the server's `killed` line for it.

MODE `atomic` saves with `checkpoint.save`; MODE `plain` is the mistake that test shows the kill test
can catch: the same bytes written by `torch.save` straight onto PATH.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch

from asyncdqn import checkpoint

FILL_SIZE = 1 << 20   # float32: 4 MiB
RAMP_SIZE = 1 << 19   # int64: 4 MiB; with FILL, a save takes tens of ms (mostly write + fsync)
WRITER_LIFETIME_S = 120.0  # a writer nobody kills stops by itself


def payload(generation: int) -> dict:
    """What generation `generation` holds: each tensor is a function of the generation alone, so a
    loaded checkpoint can be checked against its own `generation` field."""
    return {"generation": generation,
            "fill": torch.full((FILL_SIZE,), float(generation), dtype=torch.float32),
            "ramp": torch.arange(RAMP_SIZE, dtype=torch.int64) + generation}


def plain_save(path: str, data: dict) -> None:
    """checkpoint.save without the temp file and rename: a kill mid-write leaves a truncated file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(checkpoint.storable({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **data}), path)


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def write_forever(mode: str, path: str, server: int) -> None:
    save = checkpoint.save if mode == "atomic" else plain_save
    pid, born = os.getpid(), time.monotonic()
    generation = 0
    while os.getppid() == server and time.monotonic() - born < WRITER_LIFETIME_S:
        generation += 1
        start = time.perf_counter()
        save(path, payload(generation))
        say(f"saved {pid} {generation} {time.perf_counter() - start:.6f}")


def serve() -> None:
    torch.set_num_threads(1)  # before any fork, and the machine is shared
    server, writers = os.getpid(), set()
    try:
        for line in sys.stdin:
            command, _, rest = line.rstrip("\n").partition(" ")
            if command == "start":
                mode, _, path = rest.partition(" ")  # the path is the rest of the line, spaces and all
                assert mode in ("atomic", "plain"), mode
                pid = os.fork()
                if pid == 0:
                    code = 0
                    try:
                        write_forever(mode, path, server)
                    except BaseException as exc:  # noqa: BLE001 - report, then leave without unwinding the server
                        say(f"error {os.getpid()} {type(exc).__name__}: {exc}".replace("\n", " ")[:400])
                        code = 1
                    finally:
                        os._exit(code)
                writers.add(pid)
                say(f"started {pid}")
            elif command == "kill":
                pid = int(rest)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                writers.discard(pid)
                say(f"killed {pid}")
            else:
                raise ValueError(f"unknown command {line!r}")
    finally:
        for pid in writers:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


if __name__ == "__main__":
    serve()
    os._exit(0)  # skip the interpreter's teardown of torch (about a second): nothing is left to flush
