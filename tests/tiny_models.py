"""Tiny random-weight models for fast tests, loaded as `tests.tiny_models:<factory>`."""

import torch
from torch import nn

# honoured by tools.models for package.module:factory specs
input_size = 32
mean = (0.5, 0.5, 0.5)
std = (0.25, 0.25, 0.25)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


class TinyViT(nn.Module):
    """Patch embedding + CLS token + two encoder blocks (N x T x D outputs)."""

    def __init__(self, dim: int = 24, patch: int = 8):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
            for _ in range(2)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return TinyViT()


def not_a_model():
    return 42


class RedDetector(nn.Module):
    """Layer `units` (N x 2): unit 0 = the share of red pixels (plain red ~1, red dots far
    less); unit 1 = whether any red is there at all (saturates: every red scene ~1)."""

    input_size = 64
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self):
        super().__init__()
        self.units = nn.Identity()

    def forward(self, x):
        red = torch.sigmoid(40 * (x[:, 0] - x[:, 1:].max(dim=1).values - 0.4)).mean(dim=(1, 2))
        return self.units(torch.stack([red, torch.sigmoid(200 * (red - 0.02))], dim=1))


def red_detector() -> nn.Module:
    return RedDetector().eval()


class NoUnits(nn.Module):
    """Layer `empty` (N x 0): a layer without units, for the edge of every unit list."""

    input_size = 32

    def __init__(self):
        super().__init__()
        self.empty = nn.Identity()

    def forward(self, x):
        return self.empty(x.flatten(1)[:, :0])


def no_units() -> nn.Module:
    return NoUnits().eval()
