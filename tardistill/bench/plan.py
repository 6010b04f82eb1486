"""What `tardistill bench reproduce` runs: one RunSpec per run, in priority order.

Groups:
- pretrain: each backbone architecture pretrained once, as a Faster R-CNN on the shapes set
  (data/pretrain_shapes.py), the stand-in for ImageNet; every other run of that role starts from
  its backbone body.
- reference: the teachers (trained once, cached), on every dataset of the preset.
- main: the student alone and TAR at its shipped defaults, on every dataset, every seed.
- baselines: the other distillation methods at their paper defaults, same teacher, student and schedule;
  every seed when the preset seeds the group, else seed 0, and every seed for the best baseline of
  each dataset once it is known (Preset.seed_best_baseline).
- components: the paper's ablation, each TAR part alone (seed 0) and the full method with the paper's
  linear decay (every seed: the decay verdict needs a noise estimate; TAR ships without decay).
- sensitivity: each TAR weight at 0.3x and 3x its default, seed 0.
- choices: the gates changed to their ungated forms (the adaptive-gating claims) and the Gaussian mask
  at the first reconstruction's narrow, truncated form, seed 0. The other open choices were settled
  in docs/RESULTS.md 4c and left the plan.
- retinanet: teacher, student alone and TAR for the one-stage detector.
Components, sensitivity, choices and RetinaNet run on the preset's first dataset only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tardistill.bench.presets import Preset
from tardistill.config import DistillConfig
from tardistill.errors import ConfigError

# The paper's ablation: each part alone, then the full method with the paper's linear decay (the
# full method at the shipped constant weight is the main group's TAR row).
COMPONENTS = {
    "fpn_only": ("distill.cls_weight=0", "distill.reg_weight=0", "distill.decay=constant"),
    "cls_only": ("distill.fpn_weight=0", "distill.reg_weight=0", "distill.decay=constant"),
    "reg_only": ("distill.fpn_weight=0", "distill.cls_weight=0", "distill.decay=constant"),
}
LINEAR_DECAY = ("distill.decay=linear",)
# Each weight at 0.3x and 3x its shipped default: "None of them may stop the student learning."
WEIGHT_KEYS = ("fpn_weight", "cls_weight", "reg_weight")
SENSITIVITY_FACTORS = (0.3, 3.0)
SENSITIVITY = {f"{key}x{factor:g}": (f"distill.{key}={factor * getattr(DistillConfig(), key):g}",)
               for key in WEIGHT_KEYS for factor in SENSITIVITY_FACTORS}
# Each changed alone from the full method: the ungated forms of the two gates, and the narrow mask that
# stops at the box (the first reconstruction's; the shipped one is wide, docs/METHOD.md "Defaults").
CHOICES = {
    "cls_gate=all": ("distill.cls_gate=all",),
    "reg_gate=always": ("distill.reg_gate=always",),
    "mask=narrow": ("distill.beta=0.5", "distill.truncate=true"),
}
BASELINES = ("fitnet", "fgfi", "chen2017", "fgd", "pkd", "cwd")
PRETRAIN = "pretrain"


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep."""

    detector: str  # faster_rcnn | retinanet
    method: str  # teacher | none | tar | a baseline | pretrain
    variant: str
    seed: int
    group: str
    overrides: tuple[str, ...] = ()
    dataset: str = "synth"

    @property
    def key(self) -> str:
        """Folder and record name, unique in the sweep."""
        return f"{self.dataset}-{self.detector}-{self.method}-{self.variant}-s{self.seed}".replace("=", "_")

    @property
    def needs_teacher(self) -> bool:
        return self.method not in ("teacher", "none", PRETRAIN)

    @property
    def teacher_key(self) -> str:
        return RunSpec(self.detector, "teacher", "default", 0, "reference", dataset=self.dataset).key

    @property
    def role(self) -> str:
        return "teacher" if self.method == "teacher" else "student"

    def init_key(self, preset: Preset) -> str | None:
        """The run whose best weights this run starts from (preset.init_from), if any."""
        return preset.init_from.get(self.detector, {}).get(self.role)

    def dependencies(self, preset: Preset) -> list[str]:
        """Keys of the runs that must finish before this one starts."""
        if self.method == PRETRAIN:
            return []
        keys = [self.teacher_key if self.needs_teacher else None, self.init_key(preset)]
        if self.role in preset.pretrain:
            keys.append(pretrain_spec(self.role).key)
        return [k for k in keys if k]


def planned_baselines(preset: Preset) -> list[str]:
    """The baselines the preset runs, in plan order."""
    return [method for method in BASELINES if method not in preset.dropped_baselines]


def pretrain_spec(role: str) -> RunSpec:
    """The pretraining run of the backbone that `role` (teacher | student) starts from."""
    return RunSpec("faster_rcnn", PRETRAIN, role, 0, PRETRAIN, dataset="shapes")


# The groups with rows that run every seed when seeded (the others' rows run seed 0 by design).
SEEDABLE_GROUPS = ("main", "baselines", "components", "retinanet")


def with_seeded_groups(preset: Preset, groups: list[str] | None) -> Preset:
    """PRESET with GROUPS also run for every seed (`bench reproduce --seed-group`)."""
    unknown = sorted(set(groups or ()) - set(SEEDABLE_GROUPS))
    if unknown:
        raise ConfigError(f"bench reproduce --seed-group: {unknown} cannot be seeded; "
                          f"choose from {list(SEEDABLE_GROUPS)}")
    added = tuple(g for g in SEEDABLE_GROUPS if g in (groups or ()) and g not in preset.seeded_groups)
    return replace(preset, seeded_groups=preset.seeded_groups + added) if added else preset


def plan_runs(preset: Preset, seeds: int, best_baselines: dict[str, str] | None = None) -> list[RunSpec]:
    """Every run of the sweep, most important first, so a cut-short sweep has the key rows.

    best_baselines: dataset -> its best baseline at seed 0 (summary.best_seed0_baselines), which
    then runs every seed when the preset asks for it; a dataset not named there has no choice yet.
    """
    def seeds_of(group: str) -> range:
        return range(seeds if group in preset.seeded_groups else 1)

    frcnn, retina = "faster_rcnn", "retinanet"
    first = next(iter(preset.datasets))
    runs = [pretrain_spec(role) for role in ("student", "teacher") if role in preset.pretrain]
    runs += [RunSpec(frcnn, "teacher", "default", 0, "reference", dataset=d) for d in preset.datasets]
    # The students trained alone need no teacher: they fill the free slots while the teachers train.
    runs += [RunSpec(frcnn, "none", "student", s, "main", dataset=d) for s in seeds_of("main")
             for d in preset.datasets]
    runs += [RunSpec(frcnn, "tar", "full", s, "main", dataset=d) for s in seeds_of("main") for d in preset.datasets]
    # Then the comparison with the baselines on the first dataset, the decay verdict, the baselines on
    # the other datasets, the best baselines' other seeds (the level-with-the-best claim), the
    # sensitivity table and the rest of the ablation.
    baselines = [RunSpec(frcnn, method, "default", s, "baselines", dataset=d) for s in seeds_of("baselines")
                 for d in preset.datasets for method in planned_baselines(preset)]
    runs += [r for r in baselines if r.dataset == first]
    runs += [RunSpec(frcnn, "tar", "full_linear_decay", s, "components", LINEAR_DECAY, dataset=first)
             for s in seeds_of("components")]
    runs += [r for r in baselines if r.dataset != first]
    if preset.seeds_best_baseline:
        runs += [RunSpec(frcnn, method, "default", s, "baselines", dataset=d) for s in range(1, seeds)
                 for d, method in (best_baselines or {}).items()]
    runs += [RunSpec(frcnn, "tar", name, 0, "sensitivity", o, dataset=first) for name, o in SENSITIVITY.items()]
    runs += [RunSpec(frcnn, "tar", name, 0, "components", o, dataset=first) for name, o in COMPONENTS.items()]
    runs += [RunSpec(frcnn, "tar", name, 0, "choices", o, dataset=first) for name, o in CHOICES.items()]
    if "retinanet" in preset.overrides:
        runs += [RunSpec(retina, "teacher", "default", 0, "reference", dataset=first),
                 *(RunSpec(retina, "none", "student", s, "retinanet", dataset=first) for s in seeds_of("retinanet")),
                 *(RunSpec(retina, "tar", "full", s, "retinanet", dataset=first) for s in seeds_of("retinanet"))]
    return [r for r in runs if r.group not in preset.dropped_groups]
