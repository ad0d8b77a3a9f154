"""A tiny target model with known units, for tests: `tests.colour_net:colour_net`.

Layer `features` (1x1 conv, then ReLU as layer `relu`) has 4 units:
0 = redness, 1 = greenness, 2 = blueness, 3 = brightness.
"""

import torch
from torch import nn


class ColourNet(nn.Module):
    input_size = 64

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 4, kernel_size=1)
        weights = torch.tensor([
            [1.0, -0.5, -0.5],
            [-0.5, 1.0, -0.5],
            [-0.5, -0.5, 1.0],
            [1 / 3, 1 / 3, 1 / 3],
        ])
        with torch.no_grad():
            self.features.weight.copy_(weights[:, :, None, None])
            self.features.bias.zero_()
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.relu(self.features(x))
        return self.head(x.mean(dim=(2, 3)))


def colour_net() -> nn.Module:
    torch.manual_seed(0)
    return ColourNet().eval()
