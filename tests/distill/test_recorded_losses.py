"""Every method's losses and loss weights on fixed tiny inputs, against values recorded in
recorded_losses.json before the methods were rewritten as one unit each (issue 16).

A change here means a method computes something else: re-record only on purpose, with
`python tests/distill/test_recorded_losses.py --write`, and say why in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tiny_detectors import tiny_batch, tiny_faster_rcnn, tiny_retinanet

from tardistill.distill import Distiller

RECORDED = Path(__file__).with_name("recorded_losses.json")
BUILDERS = {"faster_rcnn": tiny_faster_rcnn, "retinanet": tiny_retinanet}
# TAR's defaults when the values were recorded; the shipped ones changed since (docs/METHOD.md,
# "Defaults"), so the cases name them to keep pinning the same computation.
TAR_RECORDED_DEFAULTS = {"fpn_weight": 1.0, "cls_weight": 1.0, "decay": "linear", "beta": 0.5, "truncate": True,
                         "fpn_norm": "standard", "fpn_tau": 0.7}
# TAR with every option off its default, to pin the gates, masks, units and temperature too.
TAR_VARIANT = {"cls_gate": "all", "reg_gate": "always", "fpn_norm": "sum", "beta": 1.0, "truncate": False,
               "tau": 2.0, "fpn_weight": 0.5, "cls_weight": 2.0, "reg_weight": 3.0, "decay": "linear"}
# (detector kind, method, Distiller keyword arguments): each case's name is its key in the JSON.
CASES = {
    "faster_rcnn/tar": ("faster_rcnn", "tar", TAR_RECORDED_DEFAULTS),
    "faster_rcnn/tar_variant": ("faster_rcnn", "tar", TAR_VARIANT),
    "faster_rcnn/tar_channel_mean_union": ("faster_rcnn", "tar", {**TAR_RECORDED_DEFAULTS, "fpn_norm": "channel_mean",
                                                                  "sharing": "union"}),
    "faster_rcnn/fitnet": ("faster_rcnn", "fitnet", {}),
    "faster_rcnn/fgfi": ("faster_rcnn", "fgfi", {}),
    "faster_rcnn/chen2017": ("faster_rcnn", "chen2017", {}),
    "faster_rcnn/fgd": ("faster_rcnn", "fgd", {}),
    "faster_rcnn/none": ("faster_rcnn", "none", {}),
    "retinanet/tar": ("retinanet", "tar", TAR_RECORDED_DEFAULTS),
    "retinanet/tar_variant": ("retinanet", "tar", TAR_VARIANT),
    "retinanet/fitnet": ("retinanet", "fitnet", {}),
    "retinanet/fgfi": ("retinanet", "fgfi", {}),
    "retinanet/fgd": ("retinanet", "fgd", {}),
    "retinanet/none": ("retinanet", "none", {}),
}


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """`model` with noise on every weight: untrained heads output about 0, which would pin nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model


def method_losses(kind: str, method: str, options: dict) -> dict[str, dict[str, float]]:
    """Losses of one training forward and the loss weights at step 3 of 10, as plain floats."""
    teacher = _perturbed(BUILDERS[kind](seed=1), seed=11)
    student = _perturbed(BUILDERS[kind](fpn_channels=8, seed=2), seed=12)
    torch.manual_seed(3)  # the adapters' and FGD's blocks' initialisation
    distiller = Distiller(teacher, student, method=method, **options)
    torch.manual_seed(4)  # the RoI sampler's draws
    losses = distiller(*tiny_batch())
    return {"losses": {key: float(value.detach()) for key, value in losses.items()},
            "weights": {key: float(value) for key, value in distiller.loss_weights(3, 10).items()}}


@pytest.mark.parametrize("case", CASES)
def test_losses_match_the_values_recorded_before_the_redesign(case):
    recorded = json.loads(RECORDED.read_text())[case]
    measured = method_losses(*CASES[case])
    for part in ("losses", "weights"):
        assert set(measured[part]) == set(recorded[part]), part
        for key, value in recorded[part].items():
            assert measured[part][key] == pytest.approx(value, rel=1e-5, abs=1e-7), f"{part} {key}"


if __name__ == "__main__" and "--write" in sys.argv:
    RECORDED.write_text(json.dumps({case: method_losses(*spec) for case, spec in CASES.items()}, indent=1,
                                   sort_keys=True) + "\n")
    print(f"wrote {RECORDED}")
