"""Run `python -m tardistill` as a real process: uninterrupted, killed with SIGKILL, and resumed."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tardistill.models.checkpoint import load_checkpoint, read_checkpoint_meta

PROCESS_TIMEOUT_S = 300


def _cli(command, overrides, out, config):
    sets = [arg for override in overrides for arg in ("--set", override)]
    return [sys.executable, "-m", "tardistill", command, str(config), *sets, "--out", str(out)]


def _start(args, log_path):
    # stderr goes to a file: a pipe nobody reads could fill up and stall the child.
    with open(log_path, "w") as log:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, cwd=log_path.parent)


def _kill_after_first_checkpoint(process, state_file, log_path):
    """SIGKILL `process` as soon as its first training state is on disk; returns that state's step."""
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while not state_file.exists():  # written by rename, so it exists only once complete
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint before the run ended:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(PROCESS_TIMEOUT_S)
    assert process.returncode == -signal.SIGKILL
    return read_checkpoint_meta(state_file)["trainer"]["step"]


@pytest.fixture()
def kill_and_resume(tmp_path):
    """`run(command, overrides)`: the final weights of an uninterrupted run and of a killed-and-resumed one.

    Returns (uninterrupted tensors, resumed tensors, step of the state the resumed run started from).
    """
    config = tmp_path / "exp.yaml"
    config.write_text("data: {format: synth}\n")

    def run(command, overrides):
        straight, broken = tmp_path / "straight", tmp_path / "broken"
        # The uninterrupted run goes alongside the one to be killed, to keep the test short.
        reference = _start(_cli(command, overrides, straight, config), tmp_path / "straight.log")
        victim = _start(_cli(command, overrides, broken, config), tmp_path / "broken.log")
        killed_at = _kill_after_first_checkpoint(victim, broken / "last_state.safetensors", tmp_path / "broken.log")
        assert not (broken / "final.safetensors").exists(), "the run finished before it was killed"
        resumed = subprocess.run([*_cli(command, overrides, broken, config), "--resume"], capture_output=True,
                                 text=True, timeout=PROCESS_TIMEOUT_S, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"at step {killed_at}" in resumed.stderr  # it continued rather than started over
        # The steps redone after the kill replace their records in the log instead of repeating them.
        log = [json.loads(line) for line in (broken / "metrics.jsonl").read_text().splitlines()]
        steps = [record["step"] for record in log if record["kind"] == "train"]
        assert steps == list(range(1, len(steps) + 1))
        assert reference.wait(PROCESS_TIMEOUT_S) == 0, (tmp_path / "straight.log").read_text()[-3000:]
        return (load_checkpoint(straight / "final.safetensors")[0],
                load_checkpoint(broken / "final.safetensors")[0], killed_at)
    return run


@pytest.fixture()
def cli_process(tmp_path):
    """`start(command, overrides, out, *extra)`: `python -m tardistill` on a minimal config, as a process.

    Returns (the process, the file its stderr goes to); `start.args(...)` gives the argv alone.
    """
    config = tmp_path / "exp.yaml"
    config.write_text("data: {format: synth}\n")

    def args(command, overrides, out, *extra):
        return [*_cli(command, overrides, out, config), *extra]

    def start(command, overrides, out, *extra):
        log_path = tmp_path / f"{out.name}.log"
        return _start(args(command, overrides, out, *extra), log_path), log_path
    start.args = args
    return start
