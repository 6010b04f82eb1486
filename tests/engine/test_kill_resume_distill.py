"""`tardistill distill` killed with SIGKILL after its first checkpoint resumes to the uninterrupted weights."""

import torch


def test_killed_distill_resumes_to_the_same_weights(kill_and_resume, tiny_overrides, untrained_teacher):
    overrides = [*tiny_overrides, "train.iterations=10", "train.eval_every=0", "train.device=cpu",
                 f"distill.teacher={untrained_teacher}", "distill.method=tar"]
    straight, resumed, killed_at = kill_and_resume("distill", overrides)
    assert 2 <= killed_at < 10
    assert straight.keys() == resumed.keys() and not any(k.startswith("teacher.") for k in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
