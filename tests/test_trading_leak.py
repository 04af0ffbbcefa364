"""The trading scenario chooses its policy on a validation slice before train_end, never on the bars that
`asyncdqn backtest RUN_DIR` later reports (issue 14): the split's layout, its refusals, and a run whose
saved weights do not change when every bar after train_end is replaced."""

from __future__ import annotations

import pytest
import torch
from conftest import run_in_fresh_loop, tiny_values
from conftest_trading import make_ohlcv, write_csv

from asyncdqn import checkpoint, config, runtime
from asyncdqn.envs.trading import (
    FACTORY, DataError, TradingConfig, TradingEnv, heldout_kwargs, make, scenario_kwargs)
from asyncdqn.envs.trading.config import read_settings
from asyncdqn.errors import UserError
from asyncdqn.metrics import read_records

BARS, TRAIN_END_BAR, WINDOW, VALIDATION = 400, 300, 8, 60


def frame_and_train_end():
    frame = make_ohlcv(BARS, seed=11)
    return frame, f"{frame.index[TRAIN_END_BAR]:%Y-%m-%d}"


def test_train_validation_and_test_bars_are_apart_by_a_purge_gap_of_window_bars(tmp_path):
    frame, train_end = frame_and_train_end()
    csv = write_csv(frame, tmp_path / "prices.csv")
    trading = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW, episode_length=32,
                            validation_bars=VALIDATION)
    train = TradingEnv(**scenario_kwargs(trading, evaluation=False))
    validation = TradingEnv(**scenario_kwargs(trading, evaluation=True))
    test = TradingEnv(**heldout_kwargs(trading))
    dates = [f"{d:%Y-%m-%d}" for d in frame.index]
    first_validation = TRAIN_END_BAR - VALIDATION + 1
    assert validation.first_date == dates[first_validation] and validation.last_date == train_end
    assert validation.decision_steps == VALIDATION - 1 and validation.episode_length is None
    # training's last bar, then `window` purged bars, then the validation walk's first decision
    assert train.last_date == dates[first_validation - WINDOW - 1] and train.episode_length == 32
    assert test.first_date == dates[TRAIN_END_BAR + WINDOW + 1] and test.last_date == dates[-1]
    # one normalisation, fitted on the training bars only, for all three
    assert validation.norm_range == train.norm_range == test.norm_range == (train.norm_range[0], train.last_date)
    latest = max(train.reset(seed=s)[1]["date"] for s in range(200))  # random starts stay inside training
    assert latest < train.last_date
    # the engine's door: `evaluation = true` is the validation walk
    assert make(data=str(csv), train_end=train_end, window=WINDOW, validation_bars=VALIDATION,
                evaluation=True).first_date == validation.first_date


def test_validation_bars_zero_evaluates_in_sample_on_the_training_range(tmp_path):
    frame, train_end = frame_and_train_end()
    csv = write_csv(frame, tmp_path / "prices.csv")
    trading = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW, validation_bars=0)
    train = TradingEnv(**scenario_kwargs(trading, evaluation=False))
    evaluation = TradingEnv(**scenario_kwargs(trading, evaluation=True))
    assert evaluation.first_date == train.first_date and evaluation.last_date == train.last_date == train_end


def test_bad_validation_settings_are_one_line(tmp_path):
    with pytest.raises(UserError, match="env.kwargs.validation_bars must be 0 .* or >= 2"):
        read_settings({"validation_bars": 1})
    with pytest.raises(UserError, match="env.kwargs.validation_bars expects int"):
        read_settings({"validation_bars": "60"})
    frame, train_end = frame_and_train_end()
    csv = write_csv(frame, tmp_path / "prices.csv")
    trading = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW, validation_bars=280)
    with pytest.raises(DataError, match="leave no training step after a validation slice of 280 bars") as caught:
        scenario_kwargs(trading, evaluation=False)
    assert "\n" not in str(caught.value)
    late = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW,
                         validation_start=f"{frame.index[TRAIN_END_BAR]:%Y-%m-%d}")
    with pytest.raises(DataError, match=f"validation_start {late.validation_start} leaves 1 validation bar"):
        scenario_kwargs(late, evaluation=True)


def test_validation_start_is_the_same_slice_as_counting_its_bars(tmp_path):
    frame, train_end = frame_and_train_end()
    csv = write_csv(frame, tmp_path / "prices.csv")
    counted = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW, validation_bars=VALIDATION)
    dated = TradingConfig(data=str(csv), train_end=train_end, window=WINDOW, validation_bars=0,  # start wins
                          validation_start=f"{frame.index[TRAIN_END_BAR - VALIDATION + 1]:%Y-%m-%d}")
    for evaluation in (False, True):
        assert scenario_kwargs(dated, evaluation=evaluation) == scenario_kwargs(counted, evaluation=evaluation)
    assert heldout_kwargs(dated) == heldout_kwargs(counted)


def leak_run(csv, train_end: str, out, merge: dict) -> dict:
    """A lockstep run (one actor, max_lead 0: reproducible) that keeps the best of five evaluations (none at
    the last step, where a periodic evaluation races the end of the run). `csv`: one path (`data`), or a list
    of paths (`assets`: a multi-asset run)."""
    values = tiny_values(seed=3, total_steps=900, actors={"num_actors": 1}, learner={"max_lead": 0},
                         merge={"every": 10, **merge}, eval={"every": 160, "episodes": 1, "final_episodes": 1,
                                                             "keep_best": True})
    values["env"] = {"factory": FACTORY, "eval_kwargs": {"evaluation": True},
                     "kwargs": {**({"assets": [str(c) for c in csv]} if isinstance(csv, list) else {"data": str(csv)}),
                                "train_end": train_end, "window": WINDOW, "episode_length": 32,
                                "validation_bars": VALIDATION}}
    run_in_fresh_loop(runtime.run(config.from_dict(values), out))
    return checkpoint.load(out)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("merge", [{}, {"score": "greedy", "score_episodes": 1}],
                         ids=["keep_best", "keep_best_and_greedy_merge_scores"])  # greedy: evaluation copies score
def test_replacing_every_bar_after_train_end_leaves_the_saved_weights_bit_identical(tmp_path, merge):
    frame, train_end = frame_and_train_end()
    other = make_ohlcv(BARS, seed=12, vol=0.03)  # another walk, three times as volatile, after train_end
    changed = frame.copy()
    changed.iloc[TRAIN_END_BAR + 1:] = other.iloc[TRAIN_END_BAR + 1:].to_numpy()
    assert (changed.iloc[TRAIN_END_BAR + 1:]["close"] != frame.iloc[TRAIN_END_BAR + 1:]["close"]).all()
    first = leak_run(write_csv(frame, tmp_path / "a.csv"), train_end, tmp_path / "a", merge)
    second = leak_run(write_csv(changed, tmp_path / "b.csv"), train_end, tmp_path / "b", merge)
    evals = [[(r["env_steps"], r["mean"]) for r in read_records(tmp_path / run / "metrics.jsonl")
              if r["kind"] in ("eval", "final_eval")] for run in ("a", "b")]
    assert len(evals[0]) >= 5 and evals[0] == evals[1]  # several evaluations to choose from, all the same
    kept = [(first["policy"]["state"], second["policy"]["state"]), (first["online"], second["online"]),
            (first["target"], second["target"])]
    for mine, theirs in kept:
        assert mine.keys() == theirs.keys()
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), name
    assert torch.equal(first["policy"]["weights"], second["policy"]["weights"])


@pytest.mark.timeout(90)
def test_a_multi_asset_run_is_blind_to_every_assets_bars_after_train_end(tmp_path):
    frame, train_end = frame_and_train_end()
    second = make_ohlcv(BARS, seed=21, vol=0.02)
    other = make_ohlcv(BARS, seed=12, vol=0.03)
    changed = [f.copy() for f in (frame, second)]
    for f in changed:
        f.iloc[TRAIN_END_BAR + 1:] = other.iloc[TRAIN_END_BAR + 1:].to_numpy()
    runs = []
    for name, frames in (("a", (frame, second)), ("b", changed)):
        csvs = [write_csv(f, tmp_path / f"{name}{i}.csv") for i, f in enumerate(frames)]
        runs.append(leak_run(csvs, train_end, tmp_path / name, {}))
    assert runs[0]["env"]["metadata"]["normalisation"] == "per_asset"
    for mine, theirs in ((runs[0]["policy"]["state"], runs[1]["policy"]["state"]), (runs[0]["online"], runs[1]["online"])):
        for name in mine:
            assert torch.equal(mine[name], theirs[name]), name
