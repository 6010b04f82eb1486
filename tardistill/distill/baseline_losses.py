"""Loss terms of the baseline methods as pure functions (METHOD.md, "Baselines").

FitNet, FGFI (Wang et al., CVPR 2019), Chen et al. (NeurIPS 2017) and FGD (Yang et al., CVPR 2022),
computed on the same inputs as TAR (adapted FPN features, shared RoIs) so that only the method
differs in a side-by-side comparison. Teacher inputs are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tardistill.distill.baseline_masks import FGFI_PSI
from tardistill.distill.losses import fpn_imitation_loss

# The same weight as TAR's default fpn_weight, so that FitNet and TAR differ by the mask alone.
FITNET_WEIGHT = 1.0
# FGFI's imitation weight (the official code's imitation_loss_weight; METHOD.md).
FGFI_WEIGHT = 0.01
# Chen et al.'s defaults: mu mixes hard and soft CE, nu weighs the teacher-bounded term, m is its
# margin, the background class weighs 1.5 in the soft CE, and gamma = 0.5 weighs the hint.
CHEN_MU, CHEN_NU, CHEN_MARGIN = 0.5, 0.5, 0.0
CHEN_BACKGROUND_WEIGHT, CHEN_HINT_WEIGHT = 1.5, 0.5
# FGD's two-stage (Faster R-CNN) weights and attention temperature, from the official configs.
FGD_ALPHA, FGD_BETA, FGD_GAMMA, FGD_LAMBDA = 5e-5, 2.5e-5, 5e-5, 5e-7
FGD_TEMPERATURE = 0.5


def fitnet_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNet-style hint on one FPN level: TAR's `fpn_imitation_loss` with a mask of ones.

    Per image: sum over cells and channels of (S - T)^2 / (2 * H * W), then the mean over images.

    Args:
        student_feat: Tensor[N, C, H, W], already adapted to the teacher's channels.
        teacher_feat: Tensor[N, C, H, W].

    Returns:
        scalar Tensor.
    """
    ones = student_feat.new_ones(student_feat.shape[0], *student_feat.shape[-2:])
    return fpn_imitation_loss(student_feat, teacher_feat, ones, norm="sum")


def chen_hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Chen et al.'s hint: L2 between adapted student and teacher FPN features; see `fitnet_loss`."""
    return fitnet_loss(student_feat, teacher_feat)


def fgfi_loss(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor) -> Tensor:
    """FGFI imitation on one FPN level: sum I * ||A(S) - T||^2 / (2 * sum I), per image, then mean.

    TAR's masked loss with FGFI's binary mask. The official FGFI code normalises by the mask summed
    over the whole batch instead of per image; the two agree when every image has the same mask area.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        mask: Tensor[N, H, W] of 0 / 1 from `fgfi_masks`.

    Returns:
        scalar Tensor.
    """
    return fpn_imitation_loss(student_feat, teacher_feat, mask, norm="sum")


def chen_cls_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *,
                  mu: float = CHEN_MU, background_weight: float = CHEN_BACKGROUND_WEIGHT,
                  tau: float = 1.0) -> Tensor:
    """Chen et al.'s RoI classification loss: mu * CE(hard) + (1 - mu) * weighted soft CE.

    The soft CE is -sum_c w_c p_T,c log p_S,c with p = softmax(z / tau), w_0 = background_weight and
    w_c = 1 otherwise; both parts are averaged over all given RoIs. As in the paper, the class weight
    is on the soft term only, and there is no tau^2 factor. The hard part is torchvision's own
    classifier loss, so this term replaces det/loss_classifier rather than adding to it.

    With background_weight != 1 the soft CE is not minimal at p_S = p_T but at p_S proportional to
    w * p_T: the student is pushed towards background more than the teacher is.

    Args:
        student_logits, teacher_logits: Tensor[R, C + 1], background at index 0.
        labels: Tensor[R] int64, 0 = background.

    Returns:
        scalar Tensor; 0 (attached to the student's graph) when R == 0.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    logits = student_logits.float()
    hard = F.cross_entropy(logits, labels)
    p_teacher = F.softmax(teacher_logits.detach().float() / tau, dim=1)
    class_weight = torch.ones_like(p_teacher[0])
    class_weight[0] = background_weight
    log_p_student = F.log_softmax(logits / tau, dim=1)
    soft = -(class_weight * p_teacher * log_p_student).sum(dim=1).mean()
    return mu * hard + (1 - mu) * soft


def chen_teacher_bounded(student_deltas: Tensor, teacher_deltas: Tensor, target_deltas: Tensor, *,
                         margin: float = CHEN_MARGIN) -> Tensor:
    """Where Chen's bounded term is active: ||S - y||^2 + m > ||T - y||^2 (the student is not yet
    better than the teacher by the margin).

    Args:
        student_deltas, teacher_deltas, target_deltas: Tensor[P, 4], deltas for the GT class.

    Returns:
        Tensor[P] bool.
    """
    with torch.no_grad():
        student_error = (student_deltas.float() - target_deltas.float()).pow(2).sum(dim=1)
        teacher_error = (teacher_deltas.float() - target_deltas.float()).pow(2).sum(dim=1)
        return student_error + margin > teacher_error


def chen_bounded_reg_loss(student_deltas: Tensor, teacher_deltas: Tensor, target_deltas: Tensor, *,
                          margin: float = CHEN_MARGIN) -> Tensor:
    """Chen et al.'s teacher-bounded L2 regression term, averaged over the given (positive) RoIs.

    Per RoI: ||S - y||^2 where `chen_teacher_bounded` holds, else 0. The teacher only sets the bound;
    the student is pulled towards the GT target, never towards the teacher's deltas. Add it, times
    nu, to the usual smooth-L1 box loss.

    Args:
        student_deltas, teacher_deltas, target_deltas: Tensor[P, 4], the positive RoIs' deltas for
            their GT class (`two_stage.class_deltas`) and their encoded regression targets.

    Returns:
        scalar Tensor; 0 (attached) when P == 0.
    """
    active = chen_teacher_bounded(student_deltas, teacher_deltas, target_deltas, margin=margin)
    student_error = (student_deltas.float() - target_deltas.detach().float()).pow(2).sum(dim=1)
    return (student_error * active).sum() / max(student_deltas.shape[0], 1)


def fgd_attention(feat: Tensor, *, temperature: float = FGD_TEMPERATURE) -> tuple[Tensor, Tensor]:
    """FGD's spatial and channel attention of a feature map.

    A_S = H * W * softmax over cells of (mean over channels of |F|) / T;
    A_C = C * softmax over channels of (mean over cells of |F|) / T. Each averages to 1.

    Args:
        feat: Tensor[N, C, H, W]; not detached, since the student's attention is trained too.

    Returns:
        (spatial Tensor[N, H, W], channel Tensor[N, C]).
    """
    n, c, h, w = feat.shape
    magnitude = feat.float().abs()
    spatial = magnitude.mean(dim=1).reshape(n, -1).div(temperature).softmax(dim=1)
    channel = magnitude.mean(dim=(2, 3)).div(temperature).softmax(dim=1)
    return (h * w * spatial).reshape(n, h, w), c * channel


def fgd_focal_loss(student_feat: Tensor, teacher_feat: Tensor, fg_mask: Tensor, bg_mask: Tensor,
                   spatial_att: Tensor, channel_att: Tensor, *, alpha: float = FGD_ALPHA,
                   beta: float = FGD_BETA) -> Tensor:
    """FGD's focal distillation: attention-weighted squared error on foreground and background.

    alpha * sum fg * A_S * A_C * (S - T)^2 + beta * sum bg * A_S * A_C * (S - T)^2, summed over
    channels, cells and images and divided by the batch size N (official code; the paper writes the
    per-image sum). A_S and A_C are the teacher's, for both parts, as in the official code.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        fg_mask, bg_mask: Tensor[N, H, W] from `fgd_batch_masks`.
        spatial_att: Tensor[N, H, W]; channel_att: Tensor[N, C]; the teacher's `fgd_attention`.

    Returns:
        scalar Tensor, already weighted by alpha and beta.
    """
    squared = (student_feat.float() - teacher_feat.detach().float()).pow(2)
    attention = spatial_att.detach()[:, None] * channel_att.detach()[:, :, None, None]
    weighted = (squared * attention).sum(dim=1)  # [N, H, W]
    fg_loss = (weighted * fg_mask.to(weighted)).sum()
    bg_loss = (weighted * bg_mask.to(weighted)).sum()
    return (alpha * fg_loss + beta * bg_loss) / student_feat.shape[0]


def fgd_attention_loss(student_spatial: Tensor, student_channel: Tensor, teacher_spatial: Tensor,
                       teacher_channel: Tensor, *, gamma: float = FGD_GAMMA) -> Tensor:
    """FGD's attention loss: gamma * (L1(A_S student, teacher) + L1(A_C student, teacher)), summed,
    divided by the batch size N (official code).

    Args:
        student_spatial, teacher_spatial: Tensor[N, H, W]; student_channel, teacher_channel:
            Tensor[N, C]; from `fgd_attention` of the adapted student and of the teacher.

    Returns:
        scalar Tensor, already weighted by gamma.
    """
    spatial = (student_spatial.float() - teacher_spatial.detach().float()).abs().sum()
    channel = (student_channel.float() - teacher_channel.detach().float()).abs().sum()
    return gamma * (spatial + channel) / student_spatial.shape[0]


def fgd_global_loss(student_feat: Tensor, teacher_feat: Tensor, student_context: Tensor,
                    teacher_context: Tensor, *, lam: float = FGD_LAMBDA) -> Tensor:
    """FGD's global distillation: lam * sum (R(S) - R(T))^2 / N, with R(F) = F + context(F).

    The teacher's features are detached but `teacher_context` is not: in the official code the
    teacher-side GcBlock is a trainable part of the loss, updated together with the student's.

    Args:
        student_feat: Tensor[N, C, H, W], adapted; teacher_feat: Tensor[N, C, H, W].
        student_context, teacher_context: Tensor[N, C, 1, 1], the output of each side's
            `GlobalContextBlock` on student_feat and teacher_feat.

    Returns:
        scalar Tensor, already weighted by lam.
    """
    student_global = student_feat.float() + student_context.float()
    teacher_global = teacher_feat.detach().float() + teacher_context.float()
    return lam * (student_global - teacher_global).pow(2).sum() / student_feat.shape[0]


# Each baseline's loss weights (loss key -> weight, before the decay factor w(t)), its decay
# schedule and its options. The baselines use a constant weight, as their papers do.
BASELINE_DEFAULTS: dict[str, dict[str, object]] = {
    "none": {"decay": "constant", "weights": {}},
    "fitnet": {"decay": "constant", "weights": {"kd/fpn": FITNET_WEIGHT}},
    "fgfi": {"decay": "constant", "weights": {"kd/fpn": FGFI_WEIGHT}, "psi": FGFI_PSI},
    "chen2017": {
        "decay": "constant",
        # kd/cls holds mu * CE(hard) itself, so torchvision's classifier loss is switched off.
        "weights": {"det/loss_classifier": 0.0, "kd/cls": 1.0, "kd/reg": CHEN_NU,
                    "kd/fpn": CHEN_HINT_WEIGHT},
        "mu": CHEN_MU, "background_weight": CHEN_BACKGROUND_WEIGHT, "tau": 1.0, "margin": CHEN_MARGIN,
    },
    "fgd": {
        "decay": "constant",
        # alpha, beta, gamma and lambda are applied inside the losses (alpha and beta split one
        # term), so the keys themselves weigh 1.
        "weights": {"kd/fgd_focal": 1.0, "kd/fgd_attention": 1.0, "kd/fgd_global": 1.0},
        "alpha": FGD_ALPHA, "beta": FGD_BETA, "gamma": FGD_GAMMA, "lam": FGD_LAMBDA,
        "temperature": FGD_TEMPERATURE,
    },
}
