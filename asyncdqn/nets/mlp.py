"""The K Q-networks as one batched ensemble module, and the greedy policy built from them.

Place in the flow: used by actors (batched inference), the learner (training) and the merge.

Every layer holds weights shaped [K, in, out]; one `torch.baddbmm` runs all K nets, each on its own rows,
so one forward and one backward pass train the whole ensemble (each net on its own minibatch).

Legend: K nets, B rows per net, O observation size (flattened), A actions, H hidden width, N classes.

Discrete observations (`obs_classes` = N > 0) arrive as one integer per row and are one-hot encoded inside
`forward`, so replay, actors, evaluation and exported policies all hand the net the same compact integers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class EnsembleLinear(nn.Module):
    def __init__(self, k: int, fan_in: int, fan_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, fan_in, fan_out))
        self.bias = nn.Parameter(torch.empty(k, 1, fan_out))

    def reset_parameters(self, gen: torch.Generator) -> None:
        """torch.nn.Linear's default init, U(-1/sqrt(in), 1/sqrt(in)), drawn once and shared by all K."""
        bound = 1.0 / math.sqrt(self.weight.shape[1])
        w = torch.rand(self.weight.shape[1:], generator=gen) * 2 * bound - bound
        b = torch.rand(self.bias.shape[1:], generator=gen) * 2 * bound - bound
        with torch.no_grad():
            self.weight.copy_(w.expand_as(self.weight))
            self.bias.copy_(b.expand_as(self.bias))

    def forward(self, x_KBI: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x_KBI, self.weight)


class EnsembleQNet(nn.Module):
    """K MLP Q-nets (optionally dueling). `forward(x_KBO) -> q_KBA`.

    obs_classes = N > 0: observations are integers in [0, N), x_KB (or x_KB1), one-hot encoded to N inputs
    (obs_size must be N); such a net reads observations of shape () (`obs_shape`, as a conv net's does).
    """

    def __init__(self, k: int, obs_size: int, n_actions: int, hidden: tuple = (128, 128), dueling: bool = False,
                 obs_classes: int = 0):
        super().__init__()
        if obs_classes and obs_size != obs_classes:
            raise ValueError(f"a one-hot MLP reads obs_classes = {obs_classes} inputs, not obs_size = {obs_size}")
        self.k, self.obs_size, self.n_actions = k, obs_size, n_actions
        self.hidden, self.dueling, self.obs_classes = tuple(hidden), dueling, int(obs_classes)
        if self.obs_classes:
            self.obs_shape = ()  # what checkpoint.check_fits and export read for nets with a fixed input shape
        sizes = (obs_size, *hidden)
        self.torso = nn.ModuleList(EnsembleLinear(k, a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = EnsembleLinear(k, sizes[-1], n_actions)
        self.value = EnsembleLinear(k, sizes[-1], 1) if dueling else None

    def reset_parameters(self, seed: int) -> "EnsembleQNet":
        """One shared initialisation for all K nets (the params-space merge assumes it)."""
        gen = torch.Generator().manual_seed(seed)
        for layer in self.modules():
            if isinstance(layer, EnsembleLinear):
                layer.reset_parameters(gen)
        return self

    def spec(self) -> dict:
        """The fields `from_spec` rebuilds from; "obs_classes" only for one-hot nets (Box specs are as before)."""
        spec = {"k": self.k, "obs_size": self.obs_size, "n_actions": self.n_actions,
                "hidden": list(self.hidden), "dueling": self.dueling}
        return {**spec, "obs_classes": self.obs_classes} if self.obs_classes else spec

    @classmethod
    def from_spec(cls, spec: dict) -> "EnsembleQNet":
        return cls(spec["k"], spec["obs_size"], spec["n_actions"], tuple(spec["hidden"]), spec["dueling"],
                   int(spec.get("obs_classes", 0)))

    def _one_hot(self, x_KB: torch.Tensor) -> torch.Tensor:
        """x_KB (any dtype holding integers) -> x_KBN float; a comparison, so TorchScript and ONNX export it."""
        classes_N = torch.arange(self.obs_classes, device=x_KB.device)
        return (x_KB.reshape(*x_KB.shape[:2], 1).long() == classes_N).float()

    def forward(self, x_KBO: torch.Tensor) -> torch.Tensor:
        h = self._one_hot(x_KBO) if self.obs_classes else x_KBO.reshape(*x_KBO.shape[:2], -1).float()
        for layer in self.torso:
            h = torch.relu(layer(h))
        adv = self.head(h)
        if self.value is None:
            return adv
        return self.value(h) + adv - adv.mean(dim=-1, keepdim=True)

    def forward_all(self, x_BO: torch.Tensor) -> torch.Tensor:
        """Every net on the same rows: x_BO -> q_KBA."""
        return self(x_BO.unsqueeze(0).expand(self.k, *x_BO.shape))


def numpy_forward(net: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """x_KBO -> q_KBA in numpy for a Box-input MLP ensemble (None for other nets): the actors' inference path.

    For the small batches actors send (K x a few rows), torch's per-op dispatch (~20 us an op here) is
    most of a forward pass; numpy's matmul does the same 64x64 net about 5x faster. The arrays are views
    of the net's parameters, so `copy_params_` into the net shows through without rebuilding anything.
    Results equal torch's up to float32 rounding (ties in argmax may break the other way).
    """
    if not isinstance(net, EnsembleQNet) or net.obs_classes:
        return None  # one-hot nets take the torch path: their first layer is a row lookup, cheap either way
    layers = [(lay.weight.detach().numpy(), lay.bias.detach().numpy()) for lay in net.torso]
    w_head, b_head = net.head.weight.detach().numpy(), net.head.bias.detach().numpy()
    value = None if net.value is None else (net.value.weight.detach().numpy(), net.value.bias.detach().numpy())

    def forward(x_KBO: np.ndarray) -> np.ndarray:
        h = x_KBO.reshape(*x_KBO.shape[:2], -1).astype(np.float32, copy=False)
        for w, b in layers:
            h = np.matmul(h, w)
            h += b
            np.maximum(h, 0.0, out=h)
        adv = np.matmul(h, w_head)
        adv += b_head
        if value is None:
            return adv
        return np.matmul(h, value[0]) + value[1] + adv - adv.mean(axis=-1, keepdims=True)

    return forward


def copy_params_(dst: nn.Module, src: nn.Module) -> None:
    """In-place copy of parameters (same shapes); keeps `dst`'s tensors so views of them stay valid."""
    with torch.no_grad():
        for d, s in zip(dst.parameters(), src.parameters()):
            d.copy_(s)


class GreedyPolicy:
    """argmax_a sum_k w_k Q_k(s, a): the policy that evaluation, checkpoints and backtests use.

    With K = 1 this is the plain greedy DQN policy; after a params merge with full re-sync all K nets
    equal the merged net, so the weights matter only between merges.
    """

    def __init__(self, net: EnsembleQNet, weights_K: np.ndarray):
        self.net = net
        self.w_K = torch.as_tensor(np.asarray(weights_K, dtype=np.float32)).reshape(-1, 1, 1)

    @torch.no_grad()
    def q_values(self, obs_BO: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs_BO, dtype=np.float32))
        return (self.net.forward_all(x) * self.w_K).sum(0).numpy()

    def __call__(self, obs_BO: np.ndarray) -> np.ndarray:
        return self.q_values(obs_BO).argmax(-1)
