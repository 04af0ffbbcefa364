"""K convolutional Q-networks as one batched ensemble module, and the choice between conv and MLP nets.

Place in the flow: a drop-in for `nets.mlp.EnsembleQNet` where observations are images (Atari frames, MinAtar
grids); used by actors (batched inference), the learner (training) and the merge, exactly like the MLP.

How K nets run as one module: the K torsos are one grouped convolution per layer. Net k's channels are block
k of a [B, K*C, H, W] tensor and `groups=K` keeps the blocks apart, so one conv2d call (and one backward)
serves all K nets, each on its own rows. The fully connected layers are `nets.mlp.EnsembleLinear` ([K, in, out],
one baddbmm). Every parameter keeps K as its first dimension, as the merge, `copy_params_` and the per-net
gradient clip assume; a conv weight is stored [K, out, in, kh, kw] and viewed as [K*out, in, kh, kw] for
`F.conv2d`, which is the layout grouped convolution expects, so the view is free.

Input scale: the net multiplies every input by `input_scale` before the first conv, whatever its dtype.
The rule is tied to the observation space, not the tensor's dtype, because the same observation reaches the
net as uint8 from replay and actors but as float32 from `GreedyPolicy` (which casts first): a dtype rule
would feed 0..255 floats to a net trained on 0..1. `input_scale_for(dtype, high)` gives 1/high for integer
observations (Atari frames: 1/255; MinAtar's 0/1 uint8 grids: 1) and 1 for float ones.

Legend: K nets, B rows per net, C channels, H height, W width, F flattened conv features, A actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asyncdqn.nets.mlp import EnsembleLinear


@dataclass(frozen=True)
class Torso:
    """A conv torso: (out_channels, kernel, stride) per layer (no padding), then one hidden fc layer."""

    convs: tuple[tuple[int, int, int], ...]
    fc: int

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        for _, kernel, stride in self.convs:
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        return h, w

    def fits(self, h: int, w: int) -> bool:
        for _, kernel, stride in self.convs:
            if h < kernel or w < kernel:
                return False
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        return True


TORSOS: dict[str, Torso] = {
    # Mnih et al. 2015 ("Human-level control through deep RL", Methods): 32 8x8 s4, 64 4x4 s2, 64 3x3 s1,
    # fc 512, on 4 stacked 84x84 frames.
    "nature": Torso(((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    # Young & Tian 2019 ("MinAtar", Sec. 4): one conv of 16 3x3 filters, stride 1, then fc 128.
    "minatar": Torso(((16, 3, 1),), 128),
}


class EnsembleConv2d(nn.Module):
    """K independent conv layers: weight [K, out, in, kh, kw], bias [K, out], run as one grouped conv."""

    def __init__(self, k: int, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.k, self.stride = k, stride
        self.weight = nn.Parameter(torch.empty(k, c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(k, c_out))

    def reset_parameters(self, gen: torch.Generator) -> None:
        """torch.nn.Conv2d's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn once and shared by all K."""
        bound = 1.0 / math.sqrt(math.prod(self.weight.shape[2:]))
        w = torch.rand(self.weight.shape[1:], generator=gen) * 2 * bound - bound
        b = torch.rand(self.bias.shape[1:], generator=gen) * 2 * bound - bound
        with torch.no_grad():
            self.weight.copy_(w.expand_as(self.weight))
            self.bias.copy_(b.expand_as(self.bias))

    def forward(self, x_BkCHW: torch.Tensor) -> torch.Tensor:
        """[B, K*C_in, H, W] (net k's channels in block k) -> [B, K*C_out, H', W']."""
        return F.conv2d(x_BkCHW, self.weight.flatten(0, 1), self.bias.flatten(), self.stride, groups=self.k)

    def forward_shared(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """All K nets on the same [B, C_in, H, W] input: one ungrouped conv with K*C_out filters, no K copies."""
        return F.conv2d(x_BCHW, self.weight.flatten(0, 1), self.bias.flatten(), self.stride)


class EnsembleConvQNet(nn.Module):
    """K conv Q-nets (optionally dueling). `forward(x_KB...) -> q_KBA`; the trailing dims hold C*H*W values."""

    def __init__(self, k: int, obs_shape: tuple, n_actions: int, torso: str = "nature", dueling: bool = False,
                 input_scale: float = 1.0):
        super().__init__()
        if torso not in TORSOS:
            raise ValueError(f"unknown conv torso {torso!r}; known: {', '.join(TORSOS)}")
        if len(obs_shape) != 3:
            raise ValueError(f"a conv Q-net needs (C, H, W) observations, got shape {tuple(obs_shape)}")
        c, h, w = (int(n) for n in obs_shape)
        if not TORSOS[torso].fits(h, w):
            raise ValueError(f"observations of {h}x{w} are too small for the {torso!r} torso")
        self.k, self.obs_shape, self.n_actions = k, (c, h, w), n_actions
        self.torso_name, self.dueling, self.input_scale = torso, dueling, float(input_scale)
        spec = TORSOS[torso]
        channels = (c, *(out for out, _, _ in spec.convs))
        self.convs = nn.ModuleList(EnsembleConv2d(k, a, b, kern, stride)
                                   for a, (b, kern, stride) in zip(channels, spec.convs))
        oh, ow = spec.out_hw(h, w)
        self.n_features = channels[-1] * oh * ow
        self.fc = EnsembleLinear(k, self.n_features, spec.fc)
        self.head = EnsembleLinear(k, spec.fc, n_actions)
        # Dueling as in Wang et al. 2016 (Fig. 1): the value and advantage streams split after the convs,
        # each with its own hidden fc layer (the MLP's dueling head shares its torso's last layer instead).
        self.value_fc = EnsembleLinear(k, self.n_features, spec.fc) if dueling else None
        self.value = EnsembleLinear(k, spec.fc, 1) if dueling else None

    def reset_parameters(self, seed: int) -> "EnsembleConvQNet":
        """One shared initialisation for all K nets (the params-space merge assumes it)."""
        gen = torch.Generator().manual_seed(seed)
        for layer in self.modules():
            if isinstance(layer, (EnsembleConv2d, EnsembleLinear)):
                layer.reset_parameters(gen)
        return self

    def spec(self) -> dict:
        return {"kind": "conv", "k": self.k, "obs_shape": list(self.obs_shape), "n_actions": self.n_actions,
                "torso": self.torso_name, "dueling": self.dueling, "input_scale": self.input_scale}

    @classmethod
    def from_spec(cls, spec: dict) -> "EnsembleConvQNet":
        return cls(spec["k"], tuple(spec["obs_shape"]), spec["n_actions"], spec["torso"], spec["dueling"],
                   spec["input_scale"])

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * self.input_scale if self.input_scale != 1.0 else x

    def _head(self, h_BkCHW: torch.Tensor) -> torch.Tensor:
        b = h_BkCHW.shape[0]
        # [B, K*C, H, W] -> [K, B, F]: each net's block flattens in (C, H, W) order, as nn.Flatten would.
        feat_KBF = h_BkCHW.reshape(b, self.k, self.n_features).transpose(0, 1)
        adv_KBA = self.head(torch.relu(self.fc(feat_KBF)))
        if self.value is None:
            return adv_KBA
        val_KB1 = self.value(torch.relu(self.value_fc(feat_KBF)))
        return val_KB1 + adv_KBA - adv_KBA.mean(dim=-1, keepdim=True)

    def forward(self, x_KB: torch.Tensor) -> torch.Tensor:
        """x [K, B, C, H, W] (or [K, B, C*H*W]), net k on rows x[k] -> q_KBA."""
        k, b = x_KB.shape[:2]
        c, hgt, wid = self.obs_shape
        # [K, B, C, H, W] -> [B, K*C, H, W], the grouped-conv layout, stored channels-last ([B, H, W, K*C] in
        # memory): oneDNN's grouped conv runs about 20% faster so on CPU at K=4 (benchmarks/convnet_k.py).
        # The one copy is made on the raw (often uint8) input, before the float cast.
        x = x_KB.reshape(k, b, c, hgt, wid).permute(1, 3, 4, 0, 2).reshape(b, hgt, wid, k * c).permute(0, 3, 1, 2)
        h = self._scaled(x)
        for conv in self.convs:
            h = torch.relu(conv(h))
        return self._head(h)

    def forward_all(self, x_B: torch.Tensor) -> torch.Tensor:
        """Every net on the same rows: x [B, C, H, W] -> q_KBA (the first conv reads the input once for all K)."""
        x = x_B.reshape(x_B.shape[0], *self.obs_shape).contiguous(memory_format=torch.channels_last)
        h = torch.relu(self.convs[0].forward_shared(self._scaled(x)))
        for conv in self.convs[1:]:
            h = torch.relu(conv(h))
        return self._head(h)


def input_scale_for(obs_dtype: np.dtype, obs_high) -> float:
    """1/high for integer observations (so the net sees [0, 1]), 1 for float ones (left as the env gives them)."""
    if not np.issubdtype(np.dtype(obs_dtype), np.integer):
        return 1.0
    high = float(np.max(obs_high))
    return 1.0 / high if high > 1.0 else 1.0
