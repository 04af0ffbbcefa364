"""Run configuration: frozen dataclasses filled from a scenario TOML and `--set key=value` overrides.

Place in the flow: read first, by the CLI; every later stage receives the part it needs. Each field's
docstring (the string literal under it) is what `asyncdqn scenarios --fields` and the README show.

A scenario TOML has top-level run fields and one table per section (`[env]`, `[actors]`, `[replay]`,
`[learner]`, `[merge]`, `[eval]`, `[faults]`, `[backend]`). An override key is `section.field`, or a bare
name when only one place has it: a field of one section (`--set lr=1e-3`) or a key of the scenario's
`[env] kwargs` (`--set data=prices.csv`). The engine knows no env's settings: an env plugs in through
`env.id` or `env.factory` and gets `env.kwargs` (plus `env.eval_kwargs` for the evaluation copies).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from asyncdqn.errors import UserError, first_line
from asyncdqn.sections import (ActorConfig, BackendConfig, EnvConfig, EvalConfig, FaultsConfig,  # noqa: F401
                               LearnerConfig, MergeConfig, PopulationConfig, ReplayConfig)
from asyncdqn.fields import build, coerce, field_docs, parse_value, require  # noqa: F401 (field_docs: for the CLI)

SCENARIO_DIR = Path(__file__).parent / "scenarios"


@dataclass(frozen=True)
class RunConfig:
    scenario: str = "custom"
    """Name of the scenario this config came from."""
    seed: int = 0
    """Root seed; every RNG is spawned from it with numpy.random.SeedSequence."""
    total_steps: int = 50_000
    """Env-step budget of the run."""
    torch_threads: int = 1
    """torch intra-op threads; 1 suits small nets and leaves a core to the actors."""
    checkpoint_every: int = 0
    """Updates between checkpoints (0 = only at the end and on interrupt)."""
    checkpoint_replay: bool = True
    """Save the replay pool in checkpoints, for an exact `--resume` (it can be large for image envs)."""
    log_every: int = 1_000
    """Env steps between 'train' records in metrics.jsonl."""
    env: EnvConfig = field(default_factory=EnvConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        require(self.seed >= 0, "seed", "must be >= 0")
        require(self.total_steps >= 1, "total_steps", "must be >= 1")
        # a vector actor's chunk holds all its sub-envs' rows (ColumnChunkBuilder.flush), and so must fit
        # the pool, and the held-out pool of merge.score = 'heldout_td'
        chunk = self.actors.chunk_rows * (self.actors.envs_per_actor if self.replay.frames != "stack" else 1)
        require(chunk <= self.replay.capacity, "actors.chunk_rows",
                f"x actors.envs_per_actor = {chunk} rows a chunk must be <= replay.capacity")
        if self.merge.score == "heldout_td":
            held = max(self.replay.batch_size, self.replay.capacity // self.merge.heldout_every)
            require(chunk <= held, "actors.chunk_rows", f"x actors.envs_per_actor = {chunk} rows a chunk must be "
                    f"<= the held-out pool's {held} rows (replay.capacity // merge.heldout_every)")
        require(self.torch_threads >= 1, "torch_threads", "must be >= 1")
        require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        require(self.log_every >= 1, "log_every", "must be >= 1")
        require(self.total_steps % self.actors.envs_per_actor == 0, "total_steps",
                f"must be a multiple of actors.envs_per_actor = {self.actors.envs_per_actor} (a vector step is W env steps)")
        k = self.learner.num_nets
        require(len(self.population.lrs) in (0, 2, k), "population.lrs", f"must hold learner.num_nets = {k} values "
                 "or a [low, high] range")
        if self.merge.score == "heldout_td":
            require(self.replay.frames != "stack", "merge.score", "'heldout_td' needs replay.frames = 'rows'")
        if self.backend.kind == "ray":
            groups = math.ceil(self.actors.num_actors / self.learner.num_nets)
            require(self.backend.hosts <= groups, "backend.hosts", f"must be <= {groups}: each host runs whole "
                     f"groups of learner.num_nets actors (actors.num_actors = {self.actors.num_actors})")
            require(self.actors.env_workers == 0, "actors.env_workers",
                     "must be 0 with backend.kind = 'ray' (the envs step inside the Ray hosts)")
            require(self.actors.envs_per_actor == 1, "actors.envs_per_actor",
                     "must be 1 with backend.kind = 'ray' (vector actors run in the local backend only)")


SECTION_TYPES: dict[str, type] = {
    "env": EnvConfig, "actors": ActorConfig, "replay": ReplayConfig, "learner": LearnerConfig,
    "merge": MergeConfig, "population": PopulationConfig, "eval": EvalConfig, "faults": FaultsConfig, "backend": BackendConfig,
}


def _build(values: dict) -> RunConfig:
    """A RunConfig from nested dicts: top-level fields here, each section's table by `fields.build`."""
    known = {f.name: f for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"config: unknown key {key!r}")
        if key in SECTION_TYPES:
            if not isinstance(value, dict):
                raise UserError(f"config: {key} must be a table")
            kwargs[key] = build(SECTION_TYPES[key], value, f"{key}.")
        else:
            kwargs[key] = coerce(key, value, known[key].type)
    return RunConfig(**kwargs)


def from_dict(values: dict) -> RunConfig:
    """Build and validate a RunConfig from nested dicts (a parsed TOML). Raises UserError naming the key."""
    return _build(values)


def to_dict(config: RunConfig) -> dict:
    """The nested-dict form of a config; `from_dict(to_dict(c)) == c`."""
    out = dataclasses.asdict(config)
    for section in SECTION_TYPES:
        out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in out[section].items()}
    return out


def to_toml(config: RunConfig) -> str:
    return tomli_w.dumps(to_dict(config))


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def scenario_summary(name: str) -> str:
    """The scenario file's first comment line, shown by `asyncdqn scenarios`."""
    first = (SCENARIO_DIR / f"{name}.toml").read_text().splitlines()[0]
    return first.lstrip("# ").strip()


def read_scenario(name_or_path: str) -> dict:
    """A built-in scenario name or a path to a TOML file, parsed to nested dicts."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise UserError(f"unknown scenario {name_or_path!r}; built-in: {', '.join(scenario_names())}")
    elif not path.is_file():
        raise UserError(f"scenario file not found: {name_or_path}")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({first_line(exc)})") from None
    values.setdefault("scenario", path.stem)
    return values


def resolve_key(key: str, env_kwargs: Collection[str] = ()) -> tuple[str, ...]:
    """'lr' -> ('learner', 'lr'); 'merge.tau' -> ('merge', 'tau'); 'seed' -> ('seed',); and a bare name among
    `env_kwargs` (the keys of the scenario's `[env] kwargs`) -> ('env', 'kwargs', name)."""
    parts = tuple(key.split("."))
    top = {f.name for f in dataclasses.fields(RunConfig)} - set(SECTION_TYPES)
    if len(parts) == 1:
        if parts[0] in top:
            return parts
        owners = [s for s, cls in SECTION_TYPES.items() if parts[0] in {f.name for f in dataclasses.fields(cls)}]
        places = [(o, parts[0]) for o in owners] + ([("env", "kwargs", parts[0])] if parts[0] in env_kwargs else [])
        if len(places) == 1:
            return places[0]
        if places:
            raise UserError(f"config: key {key!r} is ambiguous; use one of "
                            f"{', '.join('.'.join(p) for p in places)}")
        raise UserError(f"config: unknown key {key!r}")
    if parts[0] not in SECTION_TYPES or not all(parts):  # 'env..id': an empty part names no key
        raise UserError(f"config: unknown key {key!r}")
    return parts


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Apply `key=value` strings to nested dicts (a copy). `env.kwargs.x=1` sets a kwarg of the env; so does
    a bare `x=1` when the env's kwargs already hold `x` and no section has a field `x`."""
    import copy

    out = copy.deepcopy(values)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        env = out.get("env")
        kwargs = env.get("kwargs") if isinstance(env, dict) else None
        path = resolve_key(key.strip(), kwargs if isinstance(kwargs, dict) else ())
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"config: {key} is not a table")
        node[path[-1]] = parse_value(text.strip())
    return out


def load(scenario: str, overrides: list[str] = (), **top: Any) -> RunConfig:
    """Scenario + overrides + top-level values (seed from the CLI) -> a validated RunConfig."""
    values = apply_overrides(read_scenario(scenario), list(overrides))
    values.update({k: v for k, v in top.items() if v is not None})
    return from_dict(values)
