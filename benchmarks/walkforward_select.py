"""Choose among walk-forward candidates fold by fold on validation only, then report the chosen ones' test blocks.

Each candidate is a finished `asyncdqn walkforward` folder with the same assets and folds (e.g. the same command
with different `--set trade_penalty=...`). For every asset and fold, the candidate whose kept policy scored best
on that fold's validation walk (its run's final evaluation, `summary.json` eval_return_mean: the validation
slice inside the fold's training range) is chosen; its test block is then backtested, with the deflated Sharpe
ratio counting every candidate as a trial. The test blocks never take part in the choice.

Run:  .venv/bin/python benchmarks/walkforward_select.py runs/wf-6x4 runs/wf-6x4-penalty0.002 \\
          runs/wf-6x4-penalty0.01 --out docs/results/walkforward-6x4-selected.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import machine_info


def validation_score(fold_dir: Path) -> float:
    return float(json.loads((fold_dir / "summary.json").read_text())["eval_return_mean"])


def choose(candidates: list[Path]) -> list[dict]:
    """One entry per (asset, fold) of the first candidate: which candidate won on validation, and every score."""
    first = json.loads((candidates[0] / "walkforward.json").read_text())["folds"]
    out = []
    for row in first:
        folders = [c / row["asset"] / f"fold{row['fold']}" for c in candidates]
        scores = [validation_score(f) for f in folders]
        best = max(range(len(candidates)), key=lambda i: scores[i])
        out.append({"asset": row["asset"], "fold": row["fold"], "train_end": row["train_end"],
                    "test_last": row["test_last"], "validation_scores": scores, "chosen": str(candidates[best]),
                    "folder": folders[best]})
    return out


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def sharpe_text(row: dict) -> str:
    """'S [lo, hi]', or 'flat' for a fold whose policy never traded (its Sharpe is undefined)."""
    if row["sharpe"] is None:
        return "flat"
    lo, hi = row["sharpe_ci"]
    return f"{row['sharpe']:.2f} [{lo:.2f}, {hi:.2f}]"


def main(argv: list[str] | None = None) -> int:
    from asyncdqn.envs.trading.walkforward import _fold_backtest, fold_row, summarise
    from asyncdqn.metrics import to_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("candidates", nargs="+", type=Path, help="finished walkforward folders")
    p.add_argument("--out", type=Path, default=None, help="result JSON")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = []
    for pick in choose(args.candidates):
        result, validation_turnover = _fold_backtest(pick.pop("folder"), None)
        rows.append({**pick, **fold_row(result, validation_turnover, len(args.candidates), 1000, args.seed)})
    summary = summarise(rows, args.seed)
    counts = {str(c): sum(r["chosen"] == str(c) for r in rows) for c in args.candidates}
    print("| asset | fold | chosen | validation scores | Sharpe [95%] | DSR | p vs random | return net / gross | "
          "buy-and-hold | turnover test / validation |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['asset']} | {r['fold']} | {Path(r['chosen']).name} | "
              f"{', '.join(f'{s:+.3f}' for s in r['validation_scores'])} | {sharpe_text(r)} | "
              f"{_num(r['dsr'], '.2f')} | {_num(r['random_p'], '.3f')} | "
              f"{r['total_return']:+.1%} / {r['total_return_gross']:+.1%} | "
              f"{r['benchmark_return']:+.1%} | {r['turnover_per_bar']:.3f} / {r['validation_turnover_per_bar']:.3f} |")
    print(f"chosen: {counts}")
    print(f"over {summary['asset_folds']} asset-folds: Sharpe {summary['sharpe']:.2f} {summary['sharpe_ci']}, "
          f"beat buy-and-hold on {summary['beats_buy_and_hold']}, beat random (p < 0.05) on "
          f"{summary['beats_random_p05']}, turnover within 2x of validation on {summary['turnover_within_2x']}")
    result = {"benchmark": "walkforward_select", "machine": machine_info(),
              "command": " ".join(["benchmarks/walkforward_select.py", *(argv if argv is not None else sys.argv[1:])]),
              "candidates": [str(c) for c in args.candidates], "chosen_counts": counts, "folds": rows,
              "summary": summary}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json.loads(to_json(result)), indent=2))
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
