"""`tardistill train` killed with SIGKILL after its first checkpoint resumes to the uninterrupted weights."""

import torch


def test_killed_train_resumes_to_the_same_weights(kill_and_resume, tiny_overrides):
    overrides = [*tiny_overrides, "train.iterations=12", "train.eval_every=0", "train.device=cpu"]
    straight, resumed, killed_at = kill_and_resume("train", overrides)
    assert 2 <= killed_at < 12
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
