"""The GcBlock that FGD's global distillation compares features through (Yang et al., CVPR 2022)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class GlobalContextBlock(nn.Module):
    """GCNet's context block (Cao et al., 2019) as FGD's official code builds it, without the residual.

    forward(x) returns only the channel-add term; R(x) = x + forward(x) is what FGD's global loss
    compares (see `fgd_global_loss`). FGD keeps one such block for the student and one for the
    teacher, per FPN level, and trains both with the student: neither is part of either detector.
    """

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 2, 1)
        self.attention = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1), nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, kernel_size=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: kaiming (fan_in) attention, zero last conv.

        Zeroing the last conv makes R the identity at the start, so the global term starts as a plain
        feature MSE rather than a comparison of random projections.
        """
        nn.init.kaiming_normal_(self.attention.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.attention.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> the context term Tensor[N, C, 1, 1]."""
        n, c = x.shape[:2]
        weights = self.attention(x).reshape(n, 1, -1).softmax(dim=2)  # [N, 1, HW]: where to pool
        context = (x.reshape(n, c, -1) * weights).sum(dim=2)  # [N, C]
        return self.channel_add(context[:, :, None, None])


def build_context_blocks(channels: Mapping[str, int]) -> nn.ModuleDict:
    """FGD's blocks: `blocks["student"][level]` and `blocks["teacher"][level]`, one per FPN level.

    Args:
        channels: level name -> the teacher's channels (the student's features are adapted to them).
    """
    return nn.ModuleDict({
        side: nn.ModuleDict({name: GlobalContextBlock(c) for name, c in channels.items()})
        for side in ("student", "teacher")
    })
