"""A seeded replay scenario whose draws and state dicts are pinned in tests/data/replay_golden.npz.

The file was written by the code before replay became one package (issue 17), so a test comparing against
it shows that the move changed neither which rows a seed draws (the rng call sequence) nor a checkpoint's
`state_dict` (keys, dtypes, values). Uses only the pools' public calls. Regenerate (only when a change of
the draws is intended) with `PYTHONPATH=. python tests/helpers/replay_golden.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from asyncdqn.replay import FramePool, ReplayPool
from asyncdqn.transitions import ChunkBuilder

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "replay_golden.npz"
CASES = ("rows-uniform", "rows-prioritized", "frames-uniform", "frames-prioritized")


def _chunks(stack: bool, steps: int = 400, seed: int = 0) -> list:
    """Two actors' chunks, interleaved: random episode lengths, a mix of terminations and truncations."""
    rng = np.random.default_rng(seed)
    shape = (4, 2, 2) if stack else (3,)
    builders = [ChunkBuilder(7 + 3 * a, shape, np.uint8 if stack else np.float32, 0.9, 3, net=a) for a in (0, 1)]
    frames = rng.integers(0, 256, size=(2, 2 * steps, 2, 2)).astype(np.uint8)
    state = [{"t": 0, "ep": 0, "left": 0, "start": 0} for _ in builders]

    def obs(a: int) -> np.ndarray:
        s = state[a]
        if not stack:
            return np.array([a, s["ep"], s["t"]], np.float32)
        return frames[a, [max(s["start"], s["t"] - j) for j in (3, 2, 1, 0)]]  # reset padding

    out = []
    for a, b in enumerate(builders):
        state[a]["left"] = int(rng.integers(1, 12))
        b.observe(obs(a))
    for _ in range(steps):
        a = int(rng.integers(2))
        s, b = state[a], builders[a]
        b.acted(int(rng.integers(3)), float(rng.normal()))
        s["t"] += 1
        s["left"] -= 1
        if s["left"] == 0:
            b.final(obs(a), bool(rng.random() < 0.7))
            s.update(ep=s["ep"] + 1, t=s["t"] + 1, left=int(rng.integers(1, 12)))
            s["start"] = s["t"]
        b.observe(obs(a))
        if b.full:
            out.append(b.flush())
    return out


def _make(case: str):
    kind, mode = case.split("-")
    prioritized = mode == "prioritized"
    rng = np.random.default_rng(42)
    if kind == "rows":
        return ReplayPool(90, (3,), np.float32, rng, prioritized, 0.6, 2), _chunks(False)
    return FramePool(60, (4, 2, 2), np.uint8, rng, prioritized, 0.6, 2, row_capacity=70), _chunks(True)


def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        out[prefix + "/keys"] = np.array(json.dumps(list(value)))
        for k, v in value.items():
            _flat(f"{prefix}/{k}", v, out)
    else:
        arr = np.asarray(value)
        out[prefix] = arr
        out[prefix + "/type"] = np.array(type(value).__name__)


def run(case: str) -> dict[str, np.ndarray]:
    """Feed the chunks, sampling (and updating priorities) after every third chunk; the ring wraps."""
    pool, chunks = _make(case)
    td_rng = np.random.default_rng(7)
    batches = []
    for i, c in enumerate(chunks):
        pool.add(c)
        if i % 3 == 2:
            b = pool.sample(2, 5, beta=0.3 + 0.01 * i)
            batches.append(b)
            pool.update_priorities(b.idx_KB, td_rng.exponential(size=b.idx_KB.shape), b.stamp_KB)
    out = {f"{case}/sample/{name}": np.stack([getattr(b, name) for b in batches]) for name in batches[0]._fields}
    _flat(f"{case}/state", pool.state_dict(), out)
    _flat(f"{case}/state_norows", pool.state_dict(with_rows=False), out)
    out[f"{case}/share"] = pool.share_by_net()
    out[f"{case}/len"] = np.array(len(pool))
    out[f"{case}/nbytes_per_row"] = np.array(pool.nbytes_per_row())
    return out


def all_cases() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for case in CASES:
        out.update(run(case))
    return out


if __name__ == "__main__":
    np.savez_compressed(GOLDEN, **all_cases())
    print(f"wrote {GOLDEN}")
