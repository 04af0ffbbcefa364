"""`asyncdqn sweep GRID.toml`: scenarios × arms × seeds, each a `train` run in its own folder, N at a time.

Place in the flow: outside the engine, beside the CLI. A sweep only composes `asyncdqn train` commands (each
in its own interpreter, so a crash or a leak cannot reach the other runs) and reads their summaries back;
`asyncdqn compare` (asyncdqn.compare) turns the finished folders into statistics.

A grid file:

    out = "runs/screen"            # where the runs go (relative to the current folder); --out overrides
    parallel = 2                   # runs at a time; --parallel overrides
    seeds = 20                     # a count (seeds 0..19) or a list; a scenario may set its own
    baseline = "k1"                # the arm that `compare` reports P(improvement) against
    set = { total_steps = 50000, "eval.every" = 2500 }   # overrides of every run

    [scenarios.cartpole]           # a built-in scenario or a TOML path (quote a path: ["my/env.toml"])
    score_range = [0, 500]         # random-ish and best score: `compare` normalises with it
    set = { "eval.stop_at" = inf } # overrides of this scenario's runs

    [arms.k1]
    label = "K=1 (DQN)"
    set = { "learner.num_nets" = 1 }

Overrides apply in the order grid, scenario, arm (a later one wins) and are exactly `train --set`'s keys.
Every run is checked by loading its config before any run starts, so a bad key fails the sweep at once.

Folders: `<out>/grid.toml` (the grid as it started), `<out>/<scenario>/scenario.toml` (the scenario's text,
copied once, so that a resumed sweep trains what it started with), `<out>/<scenario>/<arm>/seed<S>/` (one run:
`sweep_run.json` with its spec, `train.log`, and what `train` writes). Seeds are the outermost loop, so a sweep
stopped early holds every arm at the first seeds.

Resume: a run is done when its `summary.json` says it was not interrupted and its spec (scenario text,
overrides, seed) is unchanged, or when it failed before (`failed.txt`; not retried). Running the same grid again
skips done runs and trains the others from scratch, so a stopped sweep loses at most the runs in flight.
Ctrl-C stops the sweep: the children get SIGINT and save their checkpoints (they count as not done).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w

from asyncdqn.errors import UserError, first_line

SPEC_FILE = "sweep_run.json"
GRID_DIR = Path(__file__).parent / "grids"  # the built-in grids: `asyncdqn sweep smoke`
GRID_KEYS = {"out", "parallel", "seeds", "baseline", "set", "scenarios", "arms"}
SCENARIO_KEYS = {"seeds", "score_range", "set"}
ARM_KEYS = {"label", "set"}


@dataclass(frozen=True)
class Run:
    """One training run of the sweep: what to train, with which overrides, into which folder."""

    scenario: str
    arm: str
    seed: int
    overrides: tuple[str, ...]
    folder: Path
    scenario_file: Path  # the sweep's copy of the scenario
    meta: dict = field(default_factory=dict, compare=False)  # label, score_range, baseline: for `compare`

    def command(self) -> list[str]:
        sets = [arg for o in self.overrides for arg in ("--set", o)]
        return [sys.executable, "-m", "asyncdqn.cli", "train", str(self.scenario_file), "--seed", str(self.seed),
                "--out", str(self.folder), "--quiet", "--force", *sets]

    def spec(self) -> dict:
        """What decides whether a finished folder is this run (meta is reporting only and may change)."""
        return {"scenario": self.scenario, "arm": self.arm, "seed": self.seed, "overrides": list(self.overrides),
                "scenario_text": self.scenario_file.read_text(encoding="utf-8")}


@dataclass(frozen=True)
class Grid:
    out: Path
    parallel: int
    runs: list[Run]


# ------------------------------------------------------------------------------------------- reading a grid

def _literal(value: Any) -> str:
    if isinstance(value, list):  # on one line (tomli_w splits arrays over lines)
        return "[" + ", ".join(map(_literal, value)) + "]"
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def override_text(key: str, value: Any) -> str:
    """A TOML value as a `--set key=value` string that config.parse_value reads back to the same value."""
    return f"{key}={_literal(value)}"


def _table(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table")
    return value


def _keys(where: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def _seeds(where: str, value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                 for s in value) and len(set(value)) == len(value):
        return list(value)
    raise UserError(f"{where}.seeds must be a count >= 1 or a list of distinct seeds >= 0, got {value!r}")


def _overrides(where: str, value: Any) -> list[str]:
    return [override_text(k, v) for k, v in _table(f"{where}.set", value).items()]


def _score_range(where: str, value: Any) -> list[float] | None:
    if value is None:
        return None
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in value) and value[0] < value[1]):
        return [float(value[0]), float(value[1])]
    raise UserError(f"{where}.score_range must be [low, high] with low < high, got {value!r}")


def grid_names() -> list[str]:
    return sorted(p.stem for p in GRID_DIR.glob("*.toml"))


class _Plan(NamedTuple):
    """One [scenarios.NAME] table."""

    scenario: str
    src: Path
    seeds: list[int]
    score_range: list[float] | None
    overrides: list[str]


def _grid_file(path: Path) -> tuple[Path, dict]:
    """A grid file or a built-in grid's name -> (its path, its parsed tables)."""
    path = Path(path)
    if not path.suffix and not path.exists():
        if path.name not in grid_names():
            raise UserError(f"unknown grid {str(path)!r}: give a TOML file or a built-in grid "
                            f"({', '.join(grid_names())})")
        path = GRID_DIR / f"{path.name}.toml"
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"grid file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{path}: not a readable TOML grid ({first_line(exc)})") from None


def _scenario_plan(path: Path, name: str, table: Any, default_seeds: list[int]) -> _Plan:
    from asyncdqn import config

    where = f"{path}: [scenarios.{name}]"
    table = _table(where, table)
    _keys(where, table, SCENARIO_KEYS)
    if "/" in name or name.endswith(".toml"):
        src = Path(name) if Path(name).is_absolute() else path.parent / name
    else:
        config.read_scenario(name)  # UserError for an unknown name
        src = config.SCENARIO_DIR / f"{name}.toml"
    if not src.is_file():
        raise UserError(f"{where}: scenario file not found: {src}")
    seeds = _seeds(where, table["seeds"]) if "seeds" in table else default_seeds
    return _Plan(Path(name).stem, src, seeds, _score_range(where, table.get("score_range")),
                 _overrides(where, table.get("set", {})))


def _arm(path: Path, name: str, table: Any) -> tuple[str, list[str]]:
    """One [arms.NAME] table -> (label, overrides)."""
    where = f"{path}: [arms.{name}]"
    table = _table(where, table)
    _keys(where, table, ARM_KEYS)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError(f"{where}: an arm's name is a folder name: letters, digits, '-', '_' and '.' only")
    return str(table.get("label", name)), _overrides(where, table.get("set", {}))


def read_grid(path: Path, out: Path | None = None, parallel: int | None = None) -> Grid:
    """Parse and check a grid file or a built-in grid's name (every run's config is loaded once, so a bad key
    fails here, before any run starts), and copy each scenario's text into the sweep folder the first time.
    UserError on anything wrong."""
    from asyncdqn import config

    path, grid = _grid_file(path)
    _keys(str(path), grid, GRID_KEYS)
    scenarios = _table(f"{path}: [scenarios]", grid.get("scenarios"))
    arms = _table(f"{path}: [arms]", grid.get("arms"))
    if not scenarios or not arms:
        raise UserError(f"{path}: a grid needs at least one [scenarios.NAME] and one [arms.NAME] table")
    baseline = grid.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise UserError(f"{path}: baseline {baseline!r} is not an arm (arms: {', '.join(arms)})")
    parallel = grid.get("parallel", 2) if parallel is None else parallel
    if not (isinstance(parallel, int) and not isinstance(parallel, bool) and parallel >= 1):
        raise UserError(f"{path}: parallel must be an integer >= 1, got {parallel!r}")
    out_dir = Path(out if out is not None else grid.get("out", f"runs/sweep-{path.stem}"))
    common = _overrides(str(path), grid.get("set", {}))
    default_seeds = _seeds(str(path), grid.get("seeds", 10))
    plans = [_scenario_plan(path, name, table, default_seeds) for name, table in scenarios.items()]
    arm_sets = {name: _arm(path, name, table) for name, table in arms.items()}

    for plan in plans:
        copy = out_dir / plan.scenario / "scenario.toml"
        if not copy.is_file():  # once: a resumed sweep keeps the scenario it started with
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plan.src, copy)
        for arm, (_, sets) in arm_sets.items():
            try:
                config.load(str(copy), [*common, *plan.overrides, *sets])
            except UserError as exc:
                raise UserError(f"{path}: scenario {plan.scenario}, arm {arm}: {exc}") from None
    runs = []
    for i in range(max(len(plan.seeds) for plan in plans)):  # seeds outermost
        for plan in (p for p in plans if i < len(p.seeds)):
            copy = (out_dir / plan.scenario / "scenario.toml").resolve()
            for arm, (label, sets) in arm_sets.items():
                meta = {"label": label, "score_range": plan.score_range, "baseline": baseline}
                runs.append(Run(plan.scenario, arm, plan.seeds[i], (*common, *plan.overrides, *sets),
                                (out_dir / plan.scenario / arm / f"seed{plan.seeds[i]}").resolve(), copy, meta))
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "grid.toml").is_file():
        shutil.copyfile(path, out_dir / "grid.toml")
    return Grid(out_dir, parallel, runs)


# ------------------------------------------------------------------------------------------- running

def is_done(run: Run) -> bool:
    """Finished before with the same spec: a summary of an uninterrupted run, or a recorded failure."""
    try:
        if json.loads((run.folder / SPEC_FILE).read_text())["spec"] != run.spec():
            return False
        if (run.folder / "failed.txt").is_file():
            return True
        return json.loads((run.folder / "summary.json").read_text()).get("interrupted") is False
    except (OSError, ValueError, KeyError, TypeError):
        return False


def eta_s(durations_s: Sequence[float], remaining: int, parallel: int) -> float | None:
    """Seconds left: the mean duration of the runs finished so far, times the runs to go, over the runs at a
    time (never more at a time than there are runs left). None before any run has finished."""
    if not durations_s:
        return None
    if remaining <= 0:
        return 0.0
    return sum(durations_s) / len(durations_s) * remaining / min(parallel, remaining)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the sweep dies (Linux), so that no run outlives its sweep."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def train_subprocess(run: Run) -> int:
    """`asyncdqn train` in a fresh interpreter; its output goes to train.log in the run's folder. Cancelled
    (Ctrl-C), it passes SIGINT on and waits for the run to save its checkpoint."""
    with open(run.folder / "train.log", "wb") as log:
        # Its own session: a Ctrl-C at the terminal reaches only the sweep, which passes one SIGINT on (two
        # would make `train` abort without its interrupt checkpoint).
        proc = await asyncio.create_subprocess_exec(
            *run.command(), stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None)
        try:
            return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await asyncio.shield(proc.wait())


async def run_sweep(grid: Grid, trainer: Callable[[Run], Awaitable[int]] = train_subprocess,
                    say: Callable[[str], None] = print) -> dict:
    """Train every run that is not done, `grid.parallel` at a time; returns counts {runs, done_before, ran,
    failed}. A run's folder is wiped and its spec written before it starts, so a half-written run never counts
    as done. A child that exits 130 (interrupted) stops the sweep with KeyboardInterrupt."""
    todo = [r for r in grid.runs if not is_done(r)]
    counts = {"runs": len(grid.runs), "done_before": len(grid.runs) - len(todo), "ran": 0, "failed": 0}
    say(f"sweep: {len(grid.runs)} runs in {grid.out}, {counts['done_before']} done before, {len(todo)} to go, "
        f"{grid.parallel} at a time")
    durations: list[float] = []
    slots = asyncio.Semaphore(grid.parallel)
    interrupted = asyncio.Event()

    async def one(run: Run) -> None:
        async with slots:
            if interrupted.is_set():
                return
            shutil.rmtree(run.folder, ignore_errors=True)
            run.folder.mkdir(parents=True)
            (run.folder / SPEC_FILE).write_text(json.dumps({"spec": run.spec(), "meta": run.meta}, indent=2))
            t0 = time.perf_counter()
            rc = await trainer(run)
            if rc == 130:
                interrupted.set()
                return
            durations.append(time.perf_counter() - t0)
            counts["ran"] += 1
            name = f"{run.scenario} {run.arm} seed {run.seed}"
            if rc != 0:
                counts["failed"] += 1
                log = run.folder / "train.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if log.is_file() else ""
                (run.folder / "failed.txt").write_text(f"exit {rc}\n{tail}\n")
                name += f" FAILED (exit {rc}, see {run.folder / 'failed.txt'})"
            left = len(todo) - counts["ran"]
            say(f"[{counts['done_before'] + counts['ran']}/{len(grid.runs)}] {name} in {durations[-1]:.0f} s; "
                f"{left} to go, ETA {_clock(eta_s(durations, left, grid.parallel))}")

    async with asyncio.TaskGroup() as tasks:
        for run in todo:
            tasks.create_task(one(run))
    if interrupted.is_set():
        raise KeyboardInterrupt
    return counts


def command(args) -> int:
    """The CLI's `sweep`: run the grid, then say where the runs are and how to compare them."""
    grid = read_grid(args.grid, args.out, args.parallel)
    counts = asyncio.run(run_sweep(grid, say=lambda m: print(m, flush=True)))
    print(f"sweep done: {counts['ran']} ran ({counts['failed']} failed), {counts['done_before']} done before; "
          f"compare with: asyncdqn compare {grid.out}")
    return 1 if counts["failed"] else 0
