"""A small built-in CNN for 8x8 .. 64x64 inputs: trains on digits in seconds on a CPU.

Global average pooling makes the parameter shapes independent of the input size; `fc1` is a hidden linear layer
worth editing (a key->value map in the sense of rewrite-style edits), `fc` the classifier.
"""

from __future__ import annotations

from torch import nn

from editaudit.worker.ml.archs.registry import register_arch


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            *_block(in_channels, width),
            *_block(width, 2 * width),
            nn.MaxPool2d(2),
            *_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc1 = nn.Linear(4 * width, 4 * width)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.relu(self.fc1(self.features(x))))


@register_arch("editaudit/smallcnn")
def smallcnn(num_classes, input_shape):
    return SmallCNN(int(input_shape[0]), num_classes)
