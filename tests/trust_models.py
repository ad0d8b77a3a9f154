"""Tiny target models for the trust tests: `tests.trust_models:or_net`.

Layer `units` has 3 units: 0 = red OR blue (a polysemantic unit: per pixel the larger of
redness and blueness), 1 = dead (always 0: no concept separates it from anything),
2 = a fixed random 5x5 filter (what a procedural generator cannot name).
"""

import torch
from torch import nn


class Units(nn.Module):
    def forward(self, x):
        return x


class OrNet(nn.Module):
    input_size = 64

    def __init__(self):
        super().__init__()
        self.colour = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.colour.weight.copy_(torch.tensor([[1.0, -0.5, -0.5], [-0.5, -0.5, 1.0]])[:, :, None, None])
        generator = torch.Generator().manual_seed(7)
        self.random = nn.Conv2d(3, 1, kernel_size=5, padding=2, bias=False)
        with torch.no_grad():
            self.random.weight.copy_(torch.randn(1, 3, 5, 5, generator=generator) / 5)
        self.units = Units()

    def forward(self, x):
        colour = torch.relu(self.colour(x)).amax(dim=1, keepdim=True)
        dead = torch.zeros_like(colour)
        return self.units(torch.cat([colour, dead, self.random(x)], dim=1))


def or_net() -> nn.Module:
    return OrNet().eval()
