"""The config sections: one frozen dataclass per TOML table (`[env]`, `[actors]`, `[replay]`, `[learner]`,
`[merge]`, `[population]`, `[eval]`, `[faults]`, `[backend]`). Each field's docstring (the string literal under it)
is what `asyncdqn scenarios --fields` and the README show. `config.py` assembles them into a RunConfig and
loads TOML and `--set` overrides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from asyncdqn.errors import UserError
from asyncdqn.fields import require


@dataclass(frozen=True)
class EnvConfig:
    id: str = "CartPole-v1"
    """A `gymnasium.make` id; `module:Env-v0` imports `module` first (third-party envs)."""
    factory: str = ""
    """`pkg.module:callable` returning a gymnasium.Env; overrides `id` when set."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments for `gymnasium.make` or the factory (TOML dates in it are passed as ISO text)."""
    eval_kwargs: dict = field(default_factory=dict)
    """Overrides of `kwargs` for the evaluation env copies (e.g. a held-out date range)."""

    def __post_init__(self) -> None:
        if not self.id and not self.factory:
            raise UserError("config: env.id or env.factory must be set")
        if self.factory and ":" not in self.factory:
            raise UserError(f"config: env.factory {self.factory!r} must look like 'pkg.module:callable'")


@dataclass(frozen=True)
class ActorConfig:
    num_actors: int = 8
    """Env instances, one asyncio coroutine each. Actor i acts with Q-net i mod K."""
    layout: str = "balanced"
    """'balanced': ceil(N / K) ladder rungs, actor i on rung i // K, so every net owns the same epsilons; 'spread': rung i (Ape-X)."""
    eps_base: float = 0.4
    """Ape-X epsilon ladder: rung j of M ends at eps_base ** (1 + eps_alpha * j / (M - 1))."""
    eps_alpha: float = 7.0
    """Spread of the epsilon ladder (Horgan et al. 2018 use 7)."""
    eps_anneal_steps: int = 10_000
    """Env steps over which each actor's epsilon falls linearly from 1 to its ladder value."""
    n_step: int = 1
    """n of the n-step return, computed per actor (1 = one-step TD)."""
    chunk_rows: int = 32
    """Rows an actor collects before it puts one chunk on the queue."""
    queue_chunks: int = 16
    """Capacity of the bounded actor -> replay queue, in chunks; a full queue makes actors wait."""
    env_workers: int = 0
    """Env worker processes: 0 = envs step on the event loop (microsecond envs), N = N workers, -1 = one per core."""
    envs_per_actor: int = 1
    """W > 1: each actor coroutine drives a gymnasium VectorEnv of W of the num_actors envs, one batched step each."""
    vector: str = "auto"
    """With envs_per_actor > 1: 'native' (gymnasium's own vector env, CartPole), 'sync' (SyncVectorEnv), 'auto' (native if any)."""

    def __post_init__(self) -> None:
        require(self.num_actors >= 1, "actors.num_actors", "must be >= 1")
        require(self.layout in ("balanced", "spread"), "actors.layout", "must be 'balanced' or 'spread'")
        require(0.0 <= self.eps_base <= 1.0, "actors.eps_base", "must be in [0, 1]")
        require(self.eps_alpha >= 0.0, "actors.eps_alpha", "must be >= 0")
        require(self.eps_anneal_steps >= 0, "actors.eps_anneal_steps", "must be >= 0")
        require(1 <= self.n_step <= 100, "actors.n_step", "must be in [1, 100]")
        require(self.chunk_rows >= self.n_step + 3, "actors.chunk_rows", "must be >= n_step + 3")
        require(self.queue_chunks >= 1, "actors.queue_chunks", "must be >= 1")
        require(self.env_workers >= -1, "actors.env_workers", "must be -1 (one per core), 0 or a count")
        require(self.envs_per_actor >= 1, "actors.envs_per_actor", "must be >= 1")
        require(self.num_actors % self.envs_per_actor == 0, "actors.envs_per_actor",
                f"must divide actors.num_actors = {self.num_actors}")
        require(self.vector in ("auto", "native", "sync"), "actors.vector", "must be 'auto', 'native' or 'sync'")
        require(self.envs_per_actor == 1 or self.env_workers == 0, "actors.env_workers",
                "must be 0 with actors.envs_per_actor > 1 (a vector env steps its sub-envs itself)")


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 100_000
    """Rows in the shared ring buffer (one row per env step, plus one per episode end)."""
    batch_size: int = 64
    """Minibatch size per Q-net; the K nets each get their own minibatch."""
    prioritized: bool = False
    """Proportional prioritized replay (Schaul et al. 2016) with a sum tree."""
    alpha: float = 0.6
    """Priority exponent of prioritized replay."""
    beta: float = 0.4
    """Initial importance-sampling exponent, annealed linearly to 1 over the run."""

    frames: str = "rows"
    """'rows': each row holds its whole observation; 'stack': observations are frame stacks (Atari), each frame stored once."""

    def __post_init__(self) -> None:
        require(self.capacity >= 64, "replay.capacity", "must be >= 64")
        require(self.frames in ("rows", "stack"), "replay.frames", "must be 'rows' or 'stack'")
        require(self.batch_size >= 1, "replay.batch_size", "must be >= 1")
        require(self.alpha >= 0.0, "replay.alpha", "must be >= 0")
        require(0.0 <= self.beta <= 1.0, "replay.beta", "must be in [0, 1]")


@dataclass(frozen=True)
class LearnerConfig:
    num_nets: int = 4
    """K, the Q-networks trained at once as one batched ensemble module."""
    net: str = "auto"
    """Q-net kind: 'mlp', 'conv', or 'auto' (conv for (C, H, W) image observations, else mlp)."""
    torso: str = "auto"
    """Conv torso: 'nature' (Mnih et al. 2015, for 84x84 frames), 'minatar' (Young & Tian 2019), 'auto'."""
    hidden: tuple = (128, 128)
    """Hidden layer widths of each Q-net's MLP."""
    dueling: bool = False
    """Dueling value/advantage heads (Wang et al. 2016)."""
    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    grad_clip: float = 10.0
    """Gradient-norm clip, applied to each net separately so the K nets stay independent."""
    huber_delta: float = 1.0
    """Huber loss threshold."""
    double: bool = True
    """Double-DQN targets: the online net picks a', the target net values it."""
    replay_ratio: float = 0.25
    """Learner updates per env step, held by the runtime (0 = collect only)."""
    learning_starts: int = 1_000
    """Env steps collected before the first update."""
    updates_per_call: int = 8
    """Updates per hand-off to the learner thread."""
    max_lead: int = 256
    """Env steps the actors may run ahead of the replay-ratio schedule; 0 = lockstep, deterministic."""
    q_limit: float = 1e6
    """An update whose |Q| exceeds this counts as diverged and is skipped, like a NaN/inf loss."""
    bootstrap_p: float = 1.0
    """Bootstrapped DQN masks (Osband et al. 2016): each net learns from a replay row with probability p (1 = all)."""
    max_bad_updates: int = 100
    """Consecutive skipped (NaN/inf or diverged) updates after which the run stops with an error."""

    def __post_init__(self) -> None:
        require(1 <= self.num_nets <= 64, "learner.num_nets", "must be in [1, 64]")
        require(self.net in ("auto", "mlp", "conv"), "learner.net", "must be 'auto', 'mlp' or 'conv'")
        require(self.torso in ("auto", "nature", "minatar"), "learner.torso", "must be 'auto', 'nature' or 'minatar'")
        require(all(isinstance(h, int) and h > 0 for h in self.hidden), "learner.hidden",
                 "must be a list of positive integers")
        require(self.lr > 0, "learner.lr", "must be > 0")
        require(0.0 < self.bootstrap_p <= 1.0, "learner.bootstrap_p", "must be in (0, 1]")
        require(0.0 <= self.gamma <= 1.0, "learner.gamma", "must be in [0, 1]")
        require(self.grad_clip > 0, "learner.grad_clip", "must be > 0")
        require(self.huber_delta > 0, "learner.huber_delta", "must be > 0")
        require(self.replay_ratio >= 0, "learner.replay_ratio", "must be >= 0")
        require(self.learning_starts >= 1, "learner.learning_starts", "must be >= 1")
        require(self.updates_per_call >= 1, "learner.updates_per_call", "must be >= 1")
        require(self.max_lead >= 0, "learner.max_lead", "must be >= 0")
        require(self.q_limit > 0, "learner.q_limit", "must be > 0")
        require(self.max_bad_updates >= 1, "learner.max_bad_updates", "must be >= 1")


@dataclass(frozen=True)
class MergeConfig:
    every: int = 250
    """Updates between softmax target merges (the target-network period)."""
    space: str = "params"
    """'params': target = sum_k w_k theta_k, nets re-synced; 'outputs': sum_k w_k Q_k(lagged); 'averaged': Averaged-DQN."""
    score: str = "return"
    """Each net's score: 'return' (its actors' returns), 'td_loss', 'greedy' (own greedy episodes) or 'heldout_td'."""
    tau: float = 1.0
    """Softmax temperature on standardised scores; inf = uniform average, 0 = copy the best net."""
    resync: float = 1.0
    """After a params merge, online_k <- (1 - resync) * online_k + resync * merged (1 = full re-sync)."""
    score_window: int = 10
    """Episodes (or updates, for td_loss) each net's score averages over."""
    since_merge: bool = False
    """'return' and 'td_loss' scores count only what came after the last merge (the nets that exist now)."""
    snapshots: int = 4
    """merge.space = 'averaged': the target averages the Q of the last this-many merged nets (Anschel et al. 2017)."""
    score_episodes: int = 2
    """merge.score = 'greedy': each net's greedy episodes before each merge, the same starts for every net."""
    heldout_every: int = 20
    """merge.score = 'heldout_td': one chunk in this many goes to held-out rows (no net trains on them)."""

    def __post_init__(self) -> None:
        require(self.every >= 1, "merge.every", "must be >= 1")
        require(self.space in ("params", "outputs", "averaged"), "merge.space",
                "must be 'params', 'outputs' or 'averaged'")
        require(self.score in ("return", "td_loss", "greedy", "heldout_td"), "merge.score",
                "must be 'return', 'td_loss', 'greedy' or 'heldout_td'")
        require(self.tau >= 0, "merge.tau", "must be >= 0 (0 = copy the best, inf = uniform)")
        require(0.0 <= self.resync <= 1.0, "merge.resync", "must be in [0, 1]")
        require(self.score_window >= 1, "merge.score_window", "must be >= 1")
        require(self.snapshots >= 1, "merge.snapshots", "must be >= 1")
        require(self.score_episodes >= 1, "merge.score_episodes", "must be >= 1")
        require(self.heldout_every >= 2, "merge.heldout_every", "must be >= 2")


@dataclass(frozen=True)
class PopulationConfig:
    lrs: tuple = ()
    """Population mode: K learning rates, one per net, or [low, high] for K log-uniform draws; empty = learner.lr."""
    explore: bool = False
    """PBT's explore step after each merge: the lowest-weight net takes the top net's lr times 0.8 or 1.25."""

    def __post_init__(self) -> None:
        require(all(isinstance(v, (int, float)) and v > 0 for v in self.lrs), "population.lrs",
                "must be a list of positive learning rates")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 5_000
    """Env steps between greedy evaluations on separate env copies (0 = only at the end)."""
    episodes: int = 10
    """Episodes per periodic evaluation."""
    final_episodes: int = 20
    """Episodes of the final evaluation written to summary.json."""
    stop_at: float = math.inf
    """Stop training once a periodic evaluation's mean return reaches this (inf = never)."""
    confirm_episodes: int = 0
    """Before stopping at stop_at, evaluate this many more episodes (other seeds) and stop only if they reach it too."""
    keep_best: bool = True
    """Checkpoint and finally evaluate the policy with the best periodic evaluation, not the last."""
    members: bool = False
    """At each periodic evaluation also evaluate every net's own greedy policy ('member_eval' records)."""

    def __post_init__(self) -> None:
        require(self.every >= 0, "eval.every", "must be >= 0")
        require(self.episodes >= 1, "eval.episodes", "must be >= 1")
        require(self.final_episodes >= 1, "eval.final_episodes", "must be >= 1")
        require(self.confirm_episodes >= 0, "eval.confirm_episodes", "must be >= 0")


@dataclass(frozen=True)
class FaultsConfig:
    env_error_rate: float = 0.0
    """Probability that a training env raises in each step or reset (fault injection for tests and demos)."""
    max_env_restarts: int = 10
    """Failed restarts in a row one actor may have before the run stops with an error."""
    restart_backoff_s: float = 0.05
    """First wait before restarting a failed env; doubles with each failure in a row, up to 2 s."""
    max_worker_restarts: int = 10
    """Env worker processes that may die (and be replaced) in a run before it stops with an error."""

    def __post_init__(self) -> None:
        require(0.0 <= self.env_error_rate < 1.0, "faults.env_error_rate", "must be in [0, 1)")
        require(self.max_env_restarts >= 0, "faults.max_env_restarts", "must be >= 0")
        require(self.restart_backoff_s >= 0, "faults.restart_backoff_s", "must be >= 0")
        require(self.max_worker_restarts >= 0, "faults.max_worker_restarts", "must be >= 0")


@dataclass(frozen=True)
class BackendConfig:
    kind: str = "local"
    """'local': actors run as coroutines in this process; 'ray': in Ray actor processes (`pip install -e '.[ray]'`)."""
    ray_address: str = ""
    """Ray cluster to join ('host:port', 'ray://host:port' or 'auto'); empty = start a local Ray instance."""
    hosts: int = 2
    """Ray actor processes (hosts); each runs whole groups of K actors (one per net) as coroutines."""
    host_cpus: float = 1.0
    """CPUs each host reserves in Ray's scheduler (a local instance gets hosts * host_cpus)."""
    weights_every: int = 0
    """Learner updates between weight broadcasts to the hosts (0 = after every learner call)."""
    max_restarts: int = 3
    """Host processes that may die (Ray restarts them) in a run before it stops with an error."""

    def __post_init__(self) -> None:
        require(self.kind in ("local", "ray"), "backend.kind", "must be 'local' or 'ray'")
        require(self.hosts >= 1, "backend.hosts", "must be >= 1")
        require(self.host_cpus >= 0, "backend.host_cpus", "must be >= 0")
        require(self.weights_every >= 0, "backend.weights_every", "must be >= 0")
        require(self.max_restarts >= 0, "backend.max_restarts", "must be >= 0")
        require("\n" not in self.ray_address and "\r" not in self.ray_address, "backend.ray_address",
                 "must be one line")
