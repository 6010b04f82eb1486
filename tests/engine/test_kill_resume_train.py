"""`tardistill train` killed with SIGKILL after its first checkpoint resumes to the uninterrupted weights;
SIGTERM saves the state first."""

import signal
import subprocess
import time

import pytest
import torch

from tardistill.models.checkpoint import read_checkpoint_meta

PROCESS_TIMEOUT_S = 300


def test_killed_train_resumes_to_the_same_weights(kill_and_resume, tiny_overrides):
    overrides = [*tiny_overrides, "train.iterations=12", "train.eval_every=0", "train.device=cpu"]
    straight, resumed, killed_at = kill_and_resume("train", overrides)
    assert 2 <= killed_at < 12
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_sigterm_saves_the_training_state_as_ctrl_c_does(tmp_path, tiny_overrides, cli_process):
    """timeout, Slurm and Kubernetes stop a job with SIGTERM; the completed steps must survive it."""
    out = tmp_path / "run"
    # Far more steps than the test waits for, and no periodic checkpoint: only the signal saves.
    overrides = [*tiny_overrides, "train.iterations=100000", "train.eval_every=0", "train.checkpoint_every=0",
                 "train.device=cpu"]
    process, log_path = cli_process("train", overrides, out)
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while _train_records(out / "metrics.jsonl") < 2:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no training steps:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(PROCESS_TIMEOUT_S) == 128 + signal.SIGTERM, log_path.read_text()[-3000:]
    log = log_path.read_text()
    assert "terminated (SIGTERM)" in log and "Traceback" not in log
    step = read_checkpoint_meta(out / "last_state.safetensors")["trainer"]["step"]
    assert step >= 2 and f"training stopped at step {step}; state saved to" in log
    resumed = subprocess.run(cli_process.args("train", [*overrides, f"train.iterations={step + 1}"], out, "--resume"),
                             capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, cwd=tmp_path)
    assert resumed.returncode == 0 and f"at step {step}" in resumed.stderr, resumed.stderr[-3000:]


def _train_records(metrics) -> int:
    return metrics.read_text().count('"kind": "train"') if metrics.is_file() else 0
