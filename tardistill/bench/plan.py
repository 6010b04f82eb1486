"""What `tardistill bench reproduce` runs: one RunSpec per training run, in priority order.

Groups:
- reference: the teachers (trained once, cached) and the students trained alone.
- components: the paper's ablation, each TAR part alone and the full method with and without
  decay, for every seed.
- choices: the options the paper leaves open (gates, Gaussian beta, decay form, sharing), each
  changed alone from the full method. (The loss-weight rows of the first cpu sweep are reported in
  docs/RESULTS.md 4c; they left the plan to fit the 2.5 h budget.)
- tuned: TAR with the preset's choices tuned on the validation split (Preset.tar_tuned).
- baselines: FitNet, FGFI, Chen et al. 2017, FGD, PKD and CWD on the same teacher, student and schedule.
- retinanet: teacher, student alone and TAR for the one-stage detector.
"""

from __future__ import annotations

from dataclasses import dataclass

from tardistill.bench.presets import Preset

# The paper's ablation: each part alone, then the full method without and with decay.
COMPONENTS = {
    "fpn_only": ("distill.cls_weight=0", "distill.reg_weight=0", "distill.decay=constant"),
    "cls_only": ("distill.fpn_weight=0", "distill.reg_weight=0", "distill.decay=constant"),
    "reg_only": ("distill.fpn_weight=0", "distill.cls_weight=0", "distill.decay=constant"),
    "full_no_decay": ("distill.decay=constant",),
    "full": (),
}
# Options the paper leaves open, each changed alone from the full method (METHOD.md defaults:
# cls_gate adaptive, reg_gate teacher_better, beta 0.5, decay linear, sharing student).
CHOICES = {
    "cls_gate=positive": ("distill.cls_gate=positive",),
    "cls_gate=all": ("distill.cls_gate=all",),
    "reg_gate=teacher_improves": ("distill.reg_gate=teacher_improves",),
    "reg_gate=always": ("distill.reg_gate=always",),
    "beta=0.25": ("distill.beta=0.25",),
    "beta=1.0": ("distill.beta=1.0",),
    "decay=cosine": ("distill.decay=cosine",),
    "decay=step": ("distill.decay=step",),
    "decay=exp": ("distill.decay=exp",),
    "sharing=union": ("distill.sharing=union",),
}
BASELINES = ("fitnet", "fgfi", "chen2017", "fgd", "pkd", "cwd")


@dataclass(frozen=True)
class RunSpec:
    """One training run of the sweep."""

    detector: str  # faster_rcnn | retinanet
    method: str  # teacher | none | tar | a baseline
    variant: str
    seed: int
    group: str
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Folder and record name, unique in the sweep."""
        return f"{self.detector}-{self.method}-{self.variant}-s{self.seed}".replace("=", "_")

    @property
    def needs_teacher(self) -> bool:
        return self.method not in ("teacher", "none")

    @property
    def teacher_key(self) -> str:
        return RunSpec(self.detector, "teacher", "default", 0, "reference").key

    @property
    def role(self) -> str:
        return "teacher" if self.method == "teacher" else "student"

    def init_key(self, preset: Preset) -> str | None:
        """The run whose best weights this run starts from (preset.init_from), if any."""
        return preset.init_from.get(self.detector, {}).get(self.role)

    def dependencies(self, preset: Preset) -> list[str]:
        """Keys of the runs that must finish before this one starts."""
        return [k for k in (self.teacher_key if self.needs_teacher else None, self.init_key(preset)) if k]


def plan_runs(preset: Preset, seeds: int) -> list[RunSpec]:
    """Every run of the sweep, most important first, so a cut-short sweep has the key rows."""
    def seeds_of(group: str) -> range:
        return range(seeds if group in preset.seeded_groups else 1)

    frcnn, retina = "faster_rcnn", "retinanet"
    retina_seeds = seeds_of("retinanet")
    # The students trained alone need no teacher: they fill the second slot while the teacher trains.
    runs = [RunSpec(frcnn, "teacher", "default", 0, "reference"),
            RunSpec(retina, "teacher", "default", 0, "reference"),
            *(RunSpec(frcnn, "none", "student", s, "components") for s in range(seeds)),
            *(RunSpec(retina, "none", "student", s, "retinanet") for s in retina_seeds)]
    for seed in range(seeds):
        runs += [RunSpec(frcnn, "tar", name, seed, "components", o) for name, o in COMPONENTS.items()]
        if seed == 0:
            runs.append(RunSpec(retina, "tar", "full", 0, "retinanet"))
        if seed in seeds_of("baselines"):
            runs += [RunSpec(frcnn, method, "default", seed, "baselines") for method in BASELINES]
    runs += [RunSpec(frcnn, "tar", name, 0, "choices", o) for name, o in CHOICES.items()]
    if preset.tar_tuned:
        runs += [RunSpec(frcnn, "tar", "tuned", s, "tuned", preset.tar_tuned) for s in seeds_of("tuned")]
    runs += [RunSpec(retina, "tar", "full", seed, "retinanet") for seed in retina_seeds[1:]]
    return runs
