"""The shared operations of ganstack.nn that more than one model uses."""

from __future__ import annotations

import torch
from torch import nn

from ganstack.nn import bn_state, frozen, init_normal_, resize, to_signed, to_unit


def test_pixel_conventions_round_trip():
    x = torch.arange(256, dtype=torch.uint8)
    s = to_signed(x)
    assert s.min() == -1 and s.max() == 1
    assert torch.equal((to_unit(s) * 255).round().to(torch.uint8), x)
    assert to_unit(torch.tensor([-3.0, 3.0]), clamp=True).tolist() == [0.0, 1.0]


def test_resize_keeps_the_size_and_antialiases_only_when_asked():
    x = torch.rand(1, 1, 8, 8)
    assert resize(x, 8) is x
    assert resize(x, 3).shape == (1, 1, 3, 3)
    assert not torch.allclose(resize(x, 3, antialias=True), resize(x, 3))
    assert torch.equal(resize(x, 16, antialias=True), resize(x, 16))  # enlarging: the same


def test_bn_state_leaves_running_averages_and_counters_as_they_were():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with bn_state([net]) as bns:
        assert bns[0].training and bns[0].momentum == 0.0
        net(torch.randn(4, 1, 3, 3))
    assert bns[0].momentum == 0.1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_frozen_switches_parameter_gradients_off_for_the_block():
    d = nn.Linear(2, 1)
    with frozen(d):
        assert not any(p.requires_grad for p in d.parameters())
    assert all(p.requires_grad for p in d.parameters())


def test_init_normal_draws_the_batch_norm_scale_only_when_asked():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    init_normal_(net)
    assert torch.equal(net[1].weight, torch.ones(4)) and torch.equal(net[0].bias, torch.zeros(4))
    init_normal_(net, bn_std=0.02, linear=False)
    assert not torch.equal(net[1].weight, torch.ones(4))
