"""Write a randomly initialised fasterrcnn_resnet50_fpn_v2 on the 10 built-in classes, saved the way
torchvision's detection reference script saves checkpoints ({"model", "args", "epoch"}).

No pretrained weights can be downloaded here, so this stands in for a downloaded model_25.pth when
checking that a zoo pair distils end to end (docs/RESULTS.md section 8). Usage:
    python scripts/random_zoo_teacher.py /tmp/zoo/model_25.pth
"""
import argparse
import sys

import torch

from tardistill.models.zoo import build_zoo_detector

torch.manual_seed(0)
model = build_zoo_detector("fasterrcnn_resnet50_fpn_v2", num_classes=10, pretrained=True)
torch.save({"model": model.state_dict(), "epoch": 25,
            "args": argparse.Namespace(model="fasterrcnn_resnet50_fpn_v2", epochs=26)}, sys.argv[1])
