"""Test helpers for the trading stage (asyncdqn.envs.trading: market_data, env, backtest).

Not a conftest.py (that file belongs to the engine's tests); test modules import it by name, which works
because pytest puts this folder on sys.path for rootdir-style test files without __init__.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
GOOGL_CSV = REPO / "data" / "GOOGL.csv"


def make_ohlcv(n: int, seed: int, *, start: str = "2020-01-01", vol: float = 0.01) -> pd.DataFrame:
    """A valid synthetic daily OHLCV frame: zero-drift log random walk, business-day dates."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    prev = np.concatenate([[100.0], close[:-1]])
    open_ = prev * np.exp(rng.normal(0.0, vol / 3, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = rng.integers(1_000, 100_000, n).astype(np.float64)
    index = pd.bdate_range(start, periods=n, name="date")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame as a plain Date,Open,High,Low,Close,Volume CSV with full float precision."""
    lines = ["Date,Open,High,Low,Close,Volume"]
    for stamp, row in zip(frame.index, frame.itertuples(index=False)):
        lines.append(f"{stamp:%Y-%m-%d},{row.open!r},{row.high!r},{row.low!r},{row.close!r},{row.volume!r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
