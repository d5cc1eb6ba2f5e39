"""ResNet-style blocks (docs/byom.md, "Residual convs are not gated"): a block whose inner
activation is its own has its inner conv pair as a site, while the convs writing into the
addition stay dense; torchvision's blocks, which share one ReLU module, have no site."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from taugate.training.targets import find_sites, select_sites
from taugate.training.traced import residual_convs, trace_graph


class OwnBlock(nn.Module):
    """A BasicBlock whose inner ReLU is a call of its own."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + x)


def _resnet(block, c: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                         block(c), block(c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(c, 10)).eval()


def test_a_block_with_its_own_activation_gates_its_inner_channels():
    model, x = _resnet(OwnBlock), torch.randn(2, 3, 8, 8)
    sites = find_sites(model, x)
    assert [(s.producer, s.norm, s.consumer) for s in sites] == [
        ("3.conv1", "3.bn1", "3.conv2"), ("4.conv1", "4.bn1", "4.conv2")]
    assert residual_convs(model, trace_graph(model)) == ["0", "3.conv2", "4.conv2"]
    with pytest.raises(ValueError, match="'3.conv2'.*residual addition.*3.conv1, 4.conv1"):
        select_sites(model, sites, "3.conv2")


@pytest.mark.parametrize("name", ["BasicBlock", "Bottleneck"])
def test_torchvision_blocks_share_their_relu_so_have_no_site(name):
    resnet = pytest.importorskip("torchvision.models.resnet")
    width = 8 if name == "BasicBlock" else 2  # a Bottleneck expands its width by 4

    def block(c):
        return getattr(resnet, name)(c, width)

    assert find_sites(_resnet(block), torch.randn(2, 3, 8, 8)) == []
