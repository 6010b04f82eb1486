"""Scales of `tardistill bench reproduce`: the data, the models and the schedules of each preset.

`cpu` fits 2.5 hours on a 2-core CPU: 128 px images, a full-width ResNet-18-FPN teacher and a
quarter-width ResNet-18-FPN student, short schedules, and two runs at a time with one thread each
(on this machine one thread is almost as fast as two per run, so two runs side by side nearly double
the throughput). Measured: 123 min for its 43 runs (CPU-2, 2026-11-28). Its first version (teacher
1200 iterations, students 600, 14 choice rows) was estimated at about 4.2 hours from per-run times
inflated by other work beside it; the schedules were cut by a third and the loss-weight rows left
the plan. `gpu` is the paper's setting scaled to the built-in data: the ResNet-101 to ResNet-50 pair
on larger images, more data and longer schedules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tardistill.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """One scale of the reproduction benchmark.

    data: `generate_synthetic` sizes. overrides: config keys for every run of a detector kind;
    teacher / student: the two architectures per kind; *_iterations: the schedules.
    jobs: runs side by side (one process each); threads: torch threads per run.
    seeded_groups: run groups repeated for every seed; the others run seed 0 only.
    tar_tuned: overrides of TAR's open choices and weights chosen on a validation split (the preset
        says which); the `tuned` group runs them (on top of `tar`) for Faster R-CNN. Empty: no tuned runs.
    init_from: detector kind -> role (teacher | student) -> key of the sweep run whose best weights
        start that run (it waits for that run); a stand-in for the ImageNet backbones real detectors
        start from. Roles not named start from scratch.
    """

    name: str
    data: dict[str, int]
    overrides: dict[str, tuple[str, ...]]
    teacher: dict[str, tuple[str, ...]]
    student: dict[str, tuple[str, ...]]
    teacher_iterations: dict[str, int]
    student_iterations: dict[str, int]
    jobs: int
    threads: int
    seeded_groups: tuple[str, ...]
    # TAR's weights. lambda_cls chosen on the first cpu preset's validation split (seed 0, full method,
    # 600 iterations): 1 -> 0.0 val AP (the student stopped learning at lr 0.05), 0.3 -> 11.7,
    # 0.1 -> 9.9; the student alone reached 6.3. lambda_fpn puts the FPN term at the detection loss's
    # scale at step 0.
    tar: tuple[str, ...] = field(default=("distill.fpn_weight=0.0005", "distill.cls_weight=0.3"))
    tar_tuned: tuple[str, ...] = ()
    init_from: dict[str, dict[str, str]] = field(default_factory=dict)


_FRCNN_SMALL = ("model.anchor_sizes=[8,16,32,64,128]", "model.rpn_pre_nms_top_n_train=600",
                "model.rpn_post_nms_top_n_train=300", "model.rpn_pre_nms_top_n_test=500",
                "model.rpn_post_nms_top_n_test=300", "model.box_batch_size_per_image=128")
# RetinaNet from scratch barely learned here: 0.26 val AP after 1200 iterations (P3-P7, plain head; its
# regression loss never fell), because with P3 at stride 8 most of these 8-50 px objects get one
# low-IoU positive anchor. P2-P6 levels, a GroupNorm head and a start from the Faster R-CNN run's
# backbone and FPN (init_from, below) reached 1.7 val AP at step 75 (probe, CPU-2, 2026-11-28).
_RETINA_SMALL = ("model.anchor_sizes=[8,16,32,64,128]", "model.retinanet_levels=p2_p6", "model.head_norm=group")
# lr 0.05: from scratch, the student reached 2.9 val AP at step 400 with it, 0.95 with 0.02 (probe, CPU-2).
_SCHEDULE = ("train.batch_size=8", "train.lr=0.05", "train.warmup_iterations=100")

PRESETS = {
    "cpu": Preset(
        name="cpu",
        data=dict(num_train=2000, num_val=150, num_test=300, image_size=128),
        overrides={"faster_rcnn": ("model.kind=faster_rcnn", *_FRCNN_SMALL, *_SCHEDULE),
                   "retinanet": ("model.kind=retinanet", *_RETINA_SMALL, *_SCHEDULE)},
        teacher={"faster_rcnn": ("model.backbone=resnet18", "model.fpn_channels=128", "model.head_width=512"),
                 "retinanet": ("model.backbone=resnet18", "model.fpn_channels=128")},
        student={"faster_rcnn": ("model.backbone=resnet18", "model.width_multiplier=0.25",
                                 "model.fpn_channels=64", "model.head_width=256"),
                 "retinanet": ("model.backbone=resnet18", "model.width_multiplier=0.25", "model.fpn_channels=64")},
        teacher_iterations={"faster_rcnn": 800, "retinanet": 400},
        student_iterations={"faster_rcnn": 400, "retinanet": 400},
        jobs=2, threads=1, seeded_groups=("components", "retinanet", "tuned"),
        # The best of each open choice on the first cpu preset's validation split, combined
        # (docs/RESULTS.md 4c): 4x lambda_fpn, a wider Gaussian, union sharing, no decay.
        tar_tuned=("distill.fpn_weight=0.002", "distill.beta=1.0", "distill.sharing=union", "distill.decay=constant"),
        # Both RetinaNets start from the backbone and FPN of the Faster R-CNN of the same architecture
        # (teacher from the teacher, students from the student trained alone, seed 0).
        init_from={"retinanet": {"teacher": "faster_rcnn-teacher-default-s0",
                                 "student": "faster_rcnn-none-student-s0"}}),
    "gpu": Preset(
        name="gpu",
        data=dict(num_train=8000, num_val=500, num_test=1000, image_size=320),
        overrides={"faster_rcnn": ("model.kind=faster_rcnn", "model.anchor_sizes=[16,32,64,128,256]",
                                   "train.batch_size=16", "train.lr=0.02", "train.warmup_iterations=500"),
                   "retinanet": ("model.kind=retinanet", "model.anchor_sizes=[16,32,64,128,256]",
                                 "train.batch_size=16", "train.lr=0.01", "train.warmup_iterations=500")},
        teacher={"faster_rcnn": ("model.backbone=resnet101",), "retinanet": ("model.backbone=resnet101",)},
        student={"faster_rcnn": ("model.backbone=resnet50",), "retinanet": ("model.backbone=resnet50",)},
        teacher_iterations={"faster_rcnn": 12000, "retinanet": 12000},
        student_iterations={"faster_rcnn": 6000, "retinanet": 6000},
        jobs=1, threads=0, seeded_groups=("components", "baselines")),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a ConfigError listing the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"bench reproduce: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
