"""The two small networks rfstream trains and ships.

FrameDetector — fully convolutional, on the whole normalised frame ``[N,1,H,W]``:

    stem     4×4 conv, stride 4, 1→16      sees full-resolution texture once, then works at H/4
    local    3×3 conv 16→16                 (stride 4)
    down     3×3 conv, stride 2, 16→32      (stride 8)
    context  3×3 convs 32→32, dilation 2, 4, 8 along time and frequency (~130 px × 4 of context)
    up       ×2 nearest + skip from `local`, 1×1 conv 48→16, 3×3 conv 16→16   (stride 4)
    heads    1×1 → objectness logit (1), class logits (C)

every conv followed by BatchNorm + ReLU. Output stride 4: a 1024×1024 frame gives
256×256 heatmaps. About 0.9 GMAC per 1024² frame (~30 ms in ONNX Runtime on 2 CPU threads).

CropClassifier — a tiny CNN on the 64×64 letterboxed crops ``[N,1,64,64]``:
four 3×3 conv/BN/ReLU stages (12, 24, 48, 64 channels) with 2×2 max-pooling,
global average + max pooling, one linear layer → C logits. About 7.5 MMAC per crop.

Both train on logits; :class:`FrameDetectorExport` and :class:`CropClassifierExport`
put the sigmoid/softmax inside the exported graph so the ONNX files output
probabilities, and take the raw [0, 1] frame: no scaling is left to the caller.
"""

from __future__ import annotations

import torch
from torch import nn

FRAME_STRIDE = 4
CROP_SIZE = 64


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2 if stride == 1 else (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FrameDetector(nn.Module):
    """Frame → (objectness logits [N,1,H/4,W/4], class logits [N,C,H/4,W/4])."""

    stride = FRAME_STRIDE

    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=4, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        self.local = _conv(16, 16)
        self.down = _conv(16, 32, stride=2)
        self.context = nn.Sequential(
            _conv(32, 32, dilation=2), _conv(32, 32, dilation=4), _conv(32, 32, dilation=8)
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Sequential(_conv(48, 16, k=1), _conv(16, 16))
        self.objectness = nn.Conv2d(16, 1, 1)
        self.classes = nn.Conv2d(16, num_classes, 1)
        # Start with few positives predicted (most cells are noise): focal-loss practice.
        nn.init.constant_(self.objectness.bias, -2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        local = self.local(self.stem(x))
        deep = self.context(self.down(local))
        fused = self.fuse(torch.cat([local, self.up(deep)], dim=1))
        return self.objectness(fused), self.classes(fused)


class CropClassifier(nn.Module):
    """Crops [N,1,64,64] → class logits [N,C]."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            _conv(1, 12),
            nn.MaxPool2d(2),
            _conv(12, 24),
            nn.MaxPool2d(2),
            _conv(24, 48),
            nn.MaxPool2d(2),
            _conv(48, 64),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class FrameDetectorExport(nn.Module):
    """What goes into the ONNX file: probabilities out, named as the model contract says."""

    def __init__(self, model: FrameDetector):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obj, cls = self.model(image)
        return torch.sigmoid(obj), torch.softmax(cls, dim=1)


class CropClassifierExport(nn.Module):
    def __init__(self, model: CropClassifier):
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(crops), dim=1)
