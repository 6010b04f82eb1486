"""The raw TAR terms at step 0 of a benchmark TAR run, in each of the FPN term's units.

Usage (after `tardistill bench reproduce --preset cpu` has trained the teacher of DATASET):
    python scripts/loss_scale_probe.py [synth|digits] [SWEEP_DIR]

Prints one JSON line per batch and FPN unit: the summed detection loss and the unweighted kd/* terms,
for the run's fresh (pretrained) student and its trained teacher; then one line per batch with each
model's FPN maps' spread over cells per level and, as min and max over the batch's images, over the
whole pyramid (what pyramid_softmax divides by). docs/METHOD.md and docs/RESULTS.md (section 12) quote
the result.
"""

import json
import sys
from pathlib import Path

import torch

from tardistill.bench.plan import RunSpec
from tardistill.bench.presets import PRESETS
from tardistill.bench.reproduce import run_config
from tardistill.data.loader import collate_detection
from tardistill.distill.distiller import Distiller
from tardistill.distill.losses import FPN_NORMS, pyramid_spread
from tardistill.distill.pair import build_pair
from tardistill.engine.setup import dataset_for


# Every unit at temperature 1, and pyramid_softmax at the temperature that gives the benchmark's
# teachers the raw maps' sharpness (docs/METHOD.md, "Loss units").
UNITS = [(units, 1.0) for units in FPN_NORMS] + [("pyramid_softmax", 0.7)]


def main(dataset: str = "synth", sweep: str = "runs/reproduce_cpu", batches: int = 3) -> None:
    torch.set_num_threads(1)
    config = run_config(RunSpec("faster_rcnn", "tar", "full", 0, "main", dataset=dataset), PRESETS["cpu"],
                        Path(sweep))
    train = dataset_for(config.data, config.data.train_split, train=True)
    torch.manual_seed(config.seed)  # the fresh student's heads and adapters: the same on every call
    pair = build_pair(config, list(train.classes))
    for index in range(batches):
        images, targets = collate_detection([train[i] for i in range(8 * index, 8 * index + 8)])
        for units, tau in UNITS:
            torch.manual_seed(index)  # every unit sees the same sampled anchors and RoIs
            distiller = Distiller(pair.teacher, pair.student, fpn_norm=units, fpn_tau=tau).train()
            with torch.no_grad():
                losses = distiller(images, targets)
            det = sum(v.item() for k, v in losses.items() if k.startswith("det/"))
            print(json.dumps({"batch": index, "fpn_norm": units, "fpn_tau": tau, "det_total": round(det, 3),
                              **{k: round(v.item(), 4) for k, v in losses.items() if k.startswith(("kd/", "stat/"))}}))
        print(json.dumps({"batch": index, "fpn_spread": fpn_spread(pair.teacher, pair.student, images)}))


def fpn_spread(teacher: torch.nn.Module, student: torch.nn.Module, images: list[torch.Tensor]) -> dict:
    """Each model's FPN maps' spread over cells (std per image and channel, averaged), per level: how
    sharp the raw `channel_softmax` is against the standardised one (std 1)."""
    spread = {}
    for name, model in (("teacher", teacher), ("student", student)):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            levels = model.backbone(model.transform(images)[0].tensors)
        model.train(was_training)
        spread[name] = {level: round(f.float().std(dim=(2, 3)).mean().item(), 2) for level, f in levels.items()}
        per_image = pyramid_spread(list(levels.values()))  # what pyramid_softmax divides by
        spread[name]["pyramid"] = [round(per_image.min().item(), 2), round(per_image.max().item(), 2)]
    return spread


if __name__ == "__main__":
    main(*sys.argv[1:])
