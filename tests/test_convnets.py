"""The conv ensemble: each of its K nets is an ordinary conv Q-net, the K nets never touch each other's
gradients, they start equal, and the spec rebuilds them (asyncdqn.nets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from asyncdqn.nets import (
    EnsembleConvQNet,
    auto_torso,
    input_scale_for,
    is_image_shape,
    make_qnet,
    qnet_from_spec,
)
from asyncdqn.errors import UserError
from asyncdqn.merge import merge_params
from asyncdqn.nets import EnsembleQNet, GreedyPolicy

@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small forwards on a busy machine run far slower with a pool of threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ATARI = (4, 84, 84)
MINATAR_BREAKOUT = (4, 10, 10)          # channel-first, as envs.games gives it
MINATAR_SPACE_INVADERS = (6, 10, 10)
NETS = [("nature", ATARI, 1 / 255), ("minatar", MINATAR_BREAKOUT, 1.0)]


def distinct_slices(net: nn.Module, seed: int = 0) -> nn.Module:
    """Shared init, then a different multiplicative jitter per slice k, so the K nets differ."""
    net.reset_parameters(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + 0.5 * torch.randn(p.shape, generator=gen))
    return net


def plain_net(ens: EnsembleConvQNet, k: int) -> nn.Module:
    """Net k of the ensemble as ordinary nn.Conv2d / nn.Linear layers holding copies of slice k."""
    convs: list[nn.Module] = []
    for layer in ens.convs:
        out_c, in_c, kern = layer.weight.shape[1:4]
        conv = nn.Conv2d(in_c, out_c, kern, layer.stride)
        conv.weight.data.copy_(layer.weight[k])
        conv.bias.data.copy_(layer.bias[k])
        convs += [conv, nn.ReLU()]

    def linear(layer) -> nn.Linear:
        lin = nn.Linear(*layer.weight.shape[1:])
        lin.weight.data.copy_(layer.weight[k].T)
        lin.bias.data.copy_(layer.bias[k, 0])
        return lin

    torso = nn.Sequential(*convs, nn.Flatten())
    adv = nn.Sequential(linear(ens.fc), nn.ReLU(), linear(ens.head))
    val = nn.Sequential(linear(ens.value_fc), nn.ReLU(), linear(ens.value)) if ens.dueling else None

    def forward(x_BCHW: torch.Tensor) -> torch.Tensor:
        h = torso(x_BCHW.float() * ens.input_scale)
        a = adv(h)
        return a if val is None else val(h) + a - a.mean(-1, keepdim=True)

    return forward


def random_obs(shape: tuple, generator: torch.Generator, dtype=torch.uint8) -> torch.Tensor:
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return (torch.rand(shape, generator=generator) < 0.3).float()   # MinAtar-like 0/1 grids


# ------------------------------------------------------------------------- (a) K nets == K plain nets


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize(("torso", "shape", "scale"), NETS)
def test_each_net_equals_a_plain_conv_net_built_from_its_slice(torso, shape, scale, dueling):
    k, b = 3, 5
    ens = distinct_slices(EnsembleConvQNet(k, shape, 6, torso, dueling, input_scale=scale))
    gen = torch.Generator().manual_seed(7)
    x = random_obs((k, b, *shape), gen, torch.uint8 if scale != 1.0 else torch.float32)
    with torch.no_grad():
        q_KBA = ens(x)
        q_all_KBA = ens.forward_all(x[0])
        assert q_KBA.shape == (k, b, 6)
        for i in range(k):
            plain = plain_net(ens, i)
            torch.testing.assert_close(q_KBA[i], plain(x[i]), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(q_all_KBA[i], plain(x[0]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(q_KBA[0], q_KBA[1])  # the slices really differ, so the test can fail


def test_forward_accepts_flattened_observations():
    ens = distinct_slices(EnsembleConvQNet(2, MINATAR_BREAKOUT, 3, "minatar"))
    x = random_obs((2, 4, *MINATAR_BREAKOUT), torch.Generator().manual_seed(0), torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(ens(x.reshape(2, 4, -1)), ens(x))


# --------------------------------------------------------------------- (b) no gradient crosses nets


@pytest.mark.parametrize("dueling", [False, True])
def test_gradient_of_net_k_reaches_only_slice_k_and_rows_k(dueling):
    k, b = 3, 4
    ens = distinct_slices(EnsembleConvQNet(k, MINATAR_SPACE_INVADERS, 4, "minatar", dueling))
    x = random_obs((k, b, *MINATAR_SPACE_INVADERS), torch.Generator().manual_seed(1), torch.float32)
    x.requires_grad_(True)
    target = 1
    ens(x)[target].square().sum().backward()
    for name, p in ens.named_parameters():
        for j in range(k):
            grad_abs = float(p.grad[j].abs().sum())
            if j == target:
                assert grad_abs > 0, f"{name}: net {target} got no gradient"
            else:
                assert grad_abs == 0, f"{name}: net {j} got gradient from net {target}'s loss"
    row_grad = x.grad.abs().flatten(2).sum(-1)                  # [K, B]
    assert (row_grad[target] > 0).all() and (row_grad[np.arange(k) != target] == 0).all()


def test_rows_of_other_nets_do_not_change_net_k():
    ens = distinct_slices(EnsembleConvQNet(3, ATARI, 6, "nature", input_scale=1 / 255))
    gen = torch.Generator().manual_seed(2)
    x = random_obs((3, 2, *ATARI), gen)
    y = x.clone()
    y[0], y[2] = random_obs((2, *ATARI), gen), random_obs((2, *ATARI), gen)
    with torch.no_grad():
        torch.testing.assert_close(ens(x)[1], ens(y)[1], atol=0, rtol=0)


# ---------------------------------------------------------------------------------- (c) shared init


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize(("torso", "shape", "scale"), NETS)
def test_reset_parameters_gives_all_k_nets_one_init(torso, shape, scale, dueling):
    ens = EnsembleConvQNet(4, shape, 6, torso, dueling).reset_parameters(3)
    params = list(ens.parameters())
    assert all(p.shape[0] == 4 for p in params)                 # K first, as merge and copy_params_ assume
    for p in params:
        for j in range(1, 4):
            assert torch.equal(p[j], p[0])
    # the same seed gives the same init whatever K, so a K=1 target net starts equal to every online net
    one = EnsembleConvQNet(1, shape, 6, torso, dueling).reset_parameters(3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(one.parameters(), params))
    other = EnsembleConvQNet(1, shape, 6, torso, dueling).reset_parameters(4)
    assert not torch.equal(next(other.parameters()), next(one.parameters()))


def test_conv_init_matches_torch_default_bounds():
    ens = EnsembleConvQNet(2, ATARI, 6, "nature").reset_parameters(0)
    w = ens.convs[0].weight.detach()                            # fan_in = 4 * 8 * 8
    assert float(w.abs().max()) <= 1 / np.sqrt(256) and float(w.abs().max()) > 0.9 / np.sqrt(256)


def test_merge_of_conv_nets_loads_into_a_k1_target():
    ens = distinct_slices(EnsembleConvQNet(4, MINATAR_BREAKOUT, 3, "minatar", dueling=True))
    merged = merge_params(list(ens.parameters()), np.full(4, 0.25))
    target = qnet_from_spec({**ens.spec(), "k": 1})
    with torch.no_grad():
        for t, m in zip(target.parameters(), merged):
            t.copy_(m)
    for t, p in zip(target.parameters(), ens.parameters()):
        torch.testing.assert_close(t[0], p.mean(0))


# -------------------------------------------------------------------------------- (d) spec round trip


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize(("torso", "shape", "scale"), NETS)
def test_spec_round_trip(torso, shape, scale, dueling):
    ens = distinct_slices(EnsembleConvQNet(2, shape, 5, torso, dueling, input_scale=scale))
    spec = ens.spec()
    assert spec["kind"] == "conv" and json.loads(json.dumps(spec)) == spec   # plain values only
    again = qnet_from_spec(json.loads(json.dumps(spec)))
    assert isinstance(again, EnsembleConvQNet) and again.spec() == spec
    again.load_state_dict(ens.state_dict())
    x = random_obs((2, 3, *shape), torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(again(x), ens(x), atol=0, rtol=0)


def test_spec_without_kind_is_the_mlp():
    mlp = EnsembleQNet(2, 4, 2, (8, 8))
    assert "kind" not in mlp.spec()
    again = qnet_from_spec(mlp.spec())
    assert isinstance(again, EnsembleQNet) and again.spec() == mlp.spec()


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"kind": "transformer"}, "unknown Q-net kind 'transformer'"),
    ({"kind": "conv", "k": 2}, "malformed conv Q-net spec"),
    ({"kind": "conv", "k": 2, "obs_shape": [4, 10, 10], "n_actions": 3, "torso": "resnet", "dueling": False,
      "input_scale": 1.0}, "unknown conv torso 'resnet'"),
    ({"k": 2, "obs_size": 4}, "malformed mlp Q-net spec"),
    ([1, 2], "unknown Q-net kind None"),
])
def test_bad_specs_are_one_line_user_errors(spec, fragment):
    with pytest.raises(UserError) as info:
        qnet_from_spec(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ (e) shapes, choice


@pytest.mark.parametrize(("shape", "dtype", "torso"), [
    (ATARI, torch.uint8, "nature"),
    (MINATAR_BREAKOUT, torch.uint8, "minatar"),
    (MINATAR_SPACE_INVADERS, torch.float32, "minatar"),
])
def test_output_shapes(shape, dtype, torso):
    net = make_qnet(3, shape, 6, dueling=True).reset_parameters(0)
    assert isinstance(net, EnsembleConvQNet) and net.torso_name == torso
    x = random_obs((3, 2, *shape), torch.Generator().manual_seed(0), dtype)
    with torch.no_grad():
        assert net(x).shape == (3, 2, 6)
        assert net.forward_all(x[0]).shape == (3, 2, 6)
        assert net(x).dtype == torch.float32


def test_nature_torso_feature_size_is_the_papers():
    assert EnsembleConvQNet(1, ATARI, 6, "nature").n_features == 64 * 7 * 7     # Mnih et al. 2015
    assert EnsembleConvQNet(1, MINATAR_BREAKOUT, 6, "minatar").n_features == 16 * 8 * 8


@pytest.mark.parametrize(("shape", "kind"), [
    ((4,), "mlp"), ((6, 32), "mlp"), ((10, 10, 4), "mlp"), ((4, 6, 6), "mlp"),
    ((4, 10, 10), "conv"), ((4, 84, 84), "conv"), ((3, 7, 7), "conv"),
])
def test_make_qnet_chooses_conv_only_for_image_like_observations(shape, kind):
    # (10, 10, 4) is MinAtar's own channel-last layout: read as (C, H, W) its W is 4, too small for an image.
    net = make_qnet(2, shape, 3, hidden=(16,))
    assert isinstance(net, EnsembleConvQNet if kind == "conv" else EnsembleQNet)
    assert is_image_shape(shape) == (kind == "conv")


def test_make_qnet_overrides():
    assert isinstance(make_qnet(1, ATARI, 6, kind="mlp", hidden=(8,)), EnsembleQNet)
    assert make_qnet(1, ATARI, 6, torso="minatar").torso_name == "minatar"
    assert auto_torso((4, 36, 36)) == "nature" and auto_torso((4, 35, 35)) == "minatar"
    with pytest.raises(ValueError, match="unknown Q-net kind"):
        make_qnet(1, ATARI, 6, kind="rnn")
    with pytest.raises(ValueError, match="too small"):
        make_qnet(1, (4, 10, 10), 6, kind="conv", torso="nature")


# ---------------------------------------------------------------------------------------- input scale


def test_input_scale_rule():
    assert input_scale_for(np.uint8, np.full((4, 84, 84), 255, np.uint8)) == 1 / 255   # Atari frames
    assert input_scale_for(np.uint8, np.ones((4, 10, 10), np.uint8)) == 1.0             # MinAtar 0/1 grids
    assert input_scale_for(np.float32, np.full(4, np.inf, np.float32)) == 1.0           # left as given


def test_uint8_and_float_inputs_give_the_same_q_values():
    # GreedyPolicy casts observations to float32 before the net, replay hands it uint8: both must agree.
    net = make_qnet(2, ATARI, 6, input_scale=1 / 255).reset_parameters(0)
    x_u8 = random_obs((2, 3, *ATARI), torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(net(x_u8), net(x_u8.float()), atol=1e-6, rtol=1e-6)
    policy = GreedyPolicy(net, np.array([0.5, 0.5]))
    with torch.no_grad():
        expected = net.forward_all(x_u8[0]).mean(0).numpy()
    np.testing.assert_allclose(policy.q_values(x_u8[0].numpy()), expected, atol=1e-5, rtol=1e-5)
