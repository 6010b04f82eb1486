"""Scales of `tardistill bench reproduce`: the data, the models and the schedules of each preset.

`cpu` is meant for a 2-core CPU: 128 px images, a full-width ResNet-18-FPN teacher and a
quarter-width ResNet-18-FPN student, two runs at a time with one thread each (on this machine one
thread is almost as fast as two per run, so two runs side by side nearly double the throughput).
Both architectures start from backbones pretrained on the shapes set (the ImageNet stand-in), and
every row of the headline comparison runs on two datasets of different kinds: the shapes benchmark
and handwritten digits. The first sweep of this project trained from scratch and its students ended
near 1 AP, at the floor, where distillation numbers measure how much faster early training goes,
not how much accuracy it buys (docs/RESULTS.md 4d). `gpu` is the paper's setting scaled to the
built-in data: the ResNet-101 to ResNet-50 pair on larger images, more data and longer schedules,
pretrained the same way at its own scale. `cpu_fp32` is `cpu` in fp32, for CPUs that only emulate
bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from tardistill.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """One scale of the reproduction benchmark.

    datasets: dataset name (synth | digits) -> generator sizes; the first carries the ablation rows.
    overrides: config keys for every run of a detector kind;
    teacher / student: the two architectures per kind; *_iterations: the schedules.
    pretrain: role (teacher | student) -> iterations of its architecture's pretraining, a Faster R-CNN
        trained from scratch on the shapes set (data/pretrain_shapes.py) before anything else, with
        pretrain_overrides; every run of that role starts from its backbone body (model.backbone_weights),
        as a real detector starts from ImageNet weights. Roles not named start from scratch.
    jobs: runs side by side (one process each); threads: torch threads per run.
    seeded_groups: run groups repeated for every seed; the others run seed 0 only.
    dropped_baselines: baselines this preset does not run (bench.plan.BASELINES lists them all).
    dropped_groups: run groups (bench.plan) this preset does not run.
    seed_best_baseline: when the baselines group runs seed 0 only, the best baseline of each dataset
        also runs every seed, so "TAR is level with the best baseline" is decided on seeds, not one
        run. The best is chosen on validation at seed 0, once every seed-0 baseline of the dataset
        has finished (summary.best_seed0_baselines); the sweep adds its seeds then.
    tar: overrides of TAR's settings for every TAR run; empty: TAR at the shipped defaults.
    init_from: detector kind -> role -> key of the sweep run whose best weights start that run.
    """

    name: str
    datasets: dict[str, dict[str, int]]
    overrides: dict[str, tuple[str, ...]]
    teacher: dict[str, tuple[str, ...]]
    student: dict[str, tuple[str, ...]]
    teacher_iterations: dict[str, int]
    student_iterations: dict[str, int]
    jobs: int
    threads: int
    seeded_groups: tuple[str, ...]
    dropped_baselines: tuple[str, ...] = ()
    dropped_groups: tuple[str, ...] = ()
    seed_best_baseline: bool = False
    pretrain: dict[str, int] = field(default_factory=dict)
    pretrain_overrides: tuple[str, ...] = ()
    tar: tuple[str, ...] = ()
    init_from: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def seeds_best_baseline(self) -> bool:
        """Whether the best baseline runs extra seeds (not when the whole baselines group is seeded)."""
        return self.seed_best_baseline and "baselines" not in self.seeded_groups

    @property
    def data(self) -> dict[str, int]:
        """The sizes of the first dataset (every dataset of the cpu and gpu presets has the same)."""
        return next(iter(self.datasets.values()))


_FRCNN_SMALL = ("model.anchor_sizes=[8,16,32,64,128]", "model.rpn_pre_nms_top_n_train=600",
                "model.rpn_post_nms_top_n_train=300", "model.rpn_pre_nms_top_n_test=500",
                "model.rpn_post_nms_top_n_test=300", "model.box_batch_size_per_image=128")
# RetinaNet from scratch barely learned here: 0.26 val AP after 1200 iterations (P3-P7, plain head),
# because with P3 at stride 8 most of these 8-50 px objects get one low-IoU positive anchor. P2-P6
# levels and a GroupNorm head fixed that (docs/RESULTS.md 9).
_RETINA_SMALL = ("model.anchor_sizes=[8,16,32,64,128]", "model.retinanet_levels=p2_p6", "model.head_norm=group")
# From pretrained backbones: lr 0.02 (torchvision's reference for batch 16 is 0.02) and a step
# schedule, x0.1 at 60 % and 90 % (the paper's 1x: 67 % and 92 %). A cosine schedule cost the
# students: digits student alone, seed 0, 1600 iterations, 35.4 test AP cosine against 39.9 multistep
# (CPU-2, 2026-11-30, docs/probe_schedule.json). The first step sits early enough that the last
# quarter of the schedule is at the low learning rates, where the convergence rule (bench/summary.py)
# reads the curve.
_SCHEDULE = ("train.batch_size=8", "train.lr=0.02", "train.warmup_iterations=100", "train.schedule=multistep",
             "train.milestones=[0.6,0.9]")
# bf16 autocast on the CPU: 1.4x (student) to 1.7x (teacher) faster training steps on CPU-2, whose
# EPYC has AVX512-BF16; same val AP within noise (synth student alone, seed 0, 800 cosine
# iterations: 28.9 against 29.2). A CPU without those instructions emulates bf16 and is far slower
# (an AVX2-only EPYC, 2026-12-01: student steps about 19 times slower; docs/RESULTS.md, section 5):
# the run and the sweep warn there (engine/setup.cpu_computes_bf16).
_CPU_PRECISION = ("train.amp=bf16",)
# From scratch (the pretraining runs): lr 0.05 and a multistep schedule at 75 % and 90 %; the student
# reached 2.9 val AP at step 400 with lr 0.05, 0.95 with 0.02 (probe, CPU-2, 2026-11-28). Milestones and
# fp32 (amp auto) are spelled out so the pretraining runs, measured before the schedule and precision
# above changed, stay current and are reused.
_SCRATCH_SCHEDULE = ("train.lr=0.05", "train.schedule=multistep", "train.milestones=[0.75,0.9]", "train.amp=auto")
_CPU_DATA = dict(num_train=2000, num_val=150, num_test=300, image_size=128)

PRESETS = {
    "cpu": Preset(
        name="cpu",
        datasets={"synth": _CPU_DATA, "digits": _CPU_DATA},
        overrides={"faster_rcnn": ("model.kind=faster_rcnn", *_FRCNN_SMALL, *_SCHEDULE, *_CPU_PRECISION),
                   "retinanet": ("model.kind=retinanet", *_RETINA_SMALL, *_SCHEDULE, *_CPU_PRECISION)},
        teacher={"faster_rcnn": ("model.backbone=resnet18", "model.fpn_channels=128", "model.head_width=512"),
                 "retinanet": ("model.backbone=resnet18", "model.fpn_channels=128")},
        student={"faster_rcnn": ("model.backbone=resnet18", "model.width_multiplier=0.25",
                                 "model.fpn_channels=64", "model.head_width=256"),
                 "retinanet": ("model.backbone=resnet18", "model.width_multiplier=0.25", "model.fpn_channels=64")},
        pretrain={"teacher": 1000, "student": 1500}, pretrain_overrides=_SCRATCH_SCHEDULE,
        # 2400 iterations (9.6 epochs of 2000 images): at 800 the students were far from converged
        # (digits student alone, seed 0: 23.5 val AP after 800 cosine iterations, 45.3 after 1600 on a
        # step schedule, which still gained 2.6 over its last quarter; CPU-2, 2026-11-30,
        # docs/probe_schedule.json).
        teacher_iterations={"faster_rcnn": 2400, "retinanet": 2400},
        student_iterations={"faster_rcnn": 2400, "retinanet": 2400},
        jobs=2, threads=1, seeded_groups=("main", "components"),
        seed_best_baseline=True,
        # Cut for the time budget (rows, not schedules): at their papers' defaults both ended far below
        # the student alone from pretrained backbones (synth FitNet 4.9, Chen 2017 13.7 test AP against
        # 27.9; digits 2.5 and 6.6 against 20.3; records in docs/results_superseded.json).
        dropped_baselines=("fitnet", "chen2017"),
        # Cut for time: the choices rows judge options the defaults do not use (the ungated gates, the
        # narrow mask); their measurements at 800 iterations are in docs/results_superseded.json.
        dropped_groups=("choices",)),
    "gpu": Preset(
        name="gpu",
        datasets={"synth": dict(num_train=8000, num_val=500, num_test=1000, image_size=320),
                  "digits": dict(num_train=8000, num_val=500, num_test=1000, image_size=320)},
        # The cpu preset's step schedule (a cosine one cost its students, see _SCHEDULE); bf16 comes
        # from train.amp=auto on GPUs that support it. Images load in 8 worker processes: on an H200
        # the ResNet-50 student alone took 0.235 s per iteration loading them in the training process
        # and 0.129 s with 8 workers (scripts/gpu_check.py, docs/gpu_check_h200.json).
        overrides={"faster_rcnn": ("model.kind=faster_rcnn", "model.anchor_sizes=[16,32,64,128,256]",
                                   "train.batch_size=16", "train.lr=0.02", "train.warmup_iterations=500",
                                   "train.schedule=multistep", "train.milestones=[0.6,0.9]", "data.num_workers=8"),
                   "retinanet": ("model.kind=retinanet", "model.anchor_sizes=[16,32,64,128,256]",
                                 "train.batch_size=16", "train.lr=0.01", "train.warmup_iterations=500",
                                 "train.schedule=multistep", "train.milestones=[0.6,0.9]", "data.num_workers=8")},
        teacher={"faster_rcnn": ("model.backbone=resnet101",), "retinanet": ("model.backbone=resnet101",)},
        student={"faster_rcnn": ("model.backbone=resnet50",), "retinanet": ("model.backbone=resnet50",)},
        # ResNet-101 and ResNet-50 from scratch would sit at the floor here too; pretrained at this
        # preset's scale.
        pretrain={"teacher": 8000, "student": 8000}, pretrain_overrides=_SCRATCH_SCHEDULE,
        teacher_iterations={"faster_rcnn": 12000, "retinanet": 12000},
        student_iterations={"faster_rcnn": 6000, "retinanet": 6000},
        jobs=1, threads=0, seeded_groups=("main", "components", "baselines")),
}

# The cpu preset in fp32, for a CPU that only emulates bf16 (AVX2 without AVX-512), where the cpu
# preset's bf16 runs are about 19 times slower (docs/RESULTS.md, section 5). Same plan, data,
# models and schedules; its numbers compare with each other, not number for number with bf16 runs.
PRESETS["cpu_fp32"] = replace(
    PRESETS["cpu"], name="cpu_fp32",
    overrides={kind: tuple("train.amp=off" if item == "train.amp=bf16" else item for item in items)
               for kind, items in PRESETS["cpu"].overrides.items()})


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a ConfigError listing the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"bench reproduce: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
