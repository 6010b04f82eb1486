"""Run folders: a run in OUT is never overwritten, mixed with another, or half-rewritten by a failed start."""

import errno
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tardistill.cli import main
from tardistill.engine.run_folder import LOCK_NAME, claimed_run_folder
from tardistill.errors import ConfigError

HOLD_FOLDER = """
import sys, time
from pathlib import Path
from tardistill.engine.run_folder import claimed_run_folder
with claimed_run_folder(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture()
def train(tmp_path, tiny_overrides, capsys):
    """`train(*extra, out=tmp_path/run)`: run `tardistill train` in this process; (exit code, stderr)."""
    config = tmp_path / "exp.yaml"
    config.write_text("data: {format: synth}\n")
    sets = [arg for override in tiny_overrides for arg in ("--set", override)]

    def run(*extra, out=tmp_path / "run"):
        code = main(["train", str(config), *sets, "--out", str(out), *map(str, extra)])
        return code, capsys.readouterr().err
    return run


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_steps(folder: Path) -> list[int]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [record["step"] for record in map(json.loads, lines) if record["kind"] == "train"]


def test_a_finished_run_is_never_overwritten(train, tmp_path):
    assert train()[0] == 0
    before = snapshot(tmp_path / "run")
    code, err = train()
    assert code == 2
    assert one_line_error(err) == (
        f"error: {tmp_path / 'run'}: holds a finished run (result.json, final.safetensors, best.safetensors, "
        "last_state.safetensors, metrics.jsonl, config.yaml, tensorboard); continue it with --resume, "
        "choose a new --out, or move it aside with --overwrite")
    assert snapshot(tmp_path / "run") == before


def test_overwrite_moves_the_old_run_aside(train, tmp_path):
    assert train()[0] == 0
    before = snapshot(tmp_path / "run")
    assert train("--overwrite")[0] == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert snapshot(aside) == before  # the old run, whole
    assert train_steps(tmp_path / "run") == [1, 2, 3, 4]  # the new run alone, not appended to the old
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    code, err = train("--overwrite", "--resume")
    assert code == 2 and "choose one" in one_line_error(err)


def test_overwrite_with_broken_data_leaves_the_old_run_in_place(train, tmp_path):
    assert train()[0] == 0
    before = snapshot(tmp_path / "run")
    code, err = train("--overwrite", "--set", f"data.root={tmp_path / 'no_such_data'}")
    assert code == 2 and "no_such_data" in one_line_error(err)
    assert snapshot(tmp_path / "run") == before
    assert not list(tmp_path.glob("run.replaced-*"))


def test_resume_without_a_saved_state_refuses_naming_the_path(train, tmp_path):
    code, err = train("--resume")
    assert code == 2
    state = tmp_path / "run" / "last_state.safetensors"
    assert one_line_error(err) == (f"error: --resume: no saved training state at {state}; "
                                   "run without --resume to start a new run")
    assert not (tmp_path / "run").exists()  # nothing was created


def test_a_failed_resume_leaves_the_folder_as_it_was(train, tmp_path):
    assert train()[0] == 0
    before = snapshot(tmp_path / "run")
    code, err = train("--resume", "--set", "model.kind=retinanet")
    line = one_line_error(err)
    assert code == 2 and "last_state.safetensors: does not fit this config's model (" in line
    assert line.endswith(f"resume with the config the run started with ({tmp_path / 'run' / 'config.yaml'})")
    assert snapshot(tmp_path / "run") == before  # config.yaml still describes the weights beside it


def test_a_folder_in_use_is_refused_and_a_crashed_holders_lock_taken_over(train, tmp_path, caplog):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_FOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = train()
        line = one_line_error(err)
        assert code == 2 and line.startswith(f"error: {out}: in use by a run (pid {holder.pid} on "
                                             f"{socket.gethostname()}, since ")
        assert line.endswith("wait for it to end, or choose a new --out")
    finally:
        holder.kill()  # as kill -9: the lock file stays behind, naming a process that is gone
        holder.wait()
    assert (out / LOCK_NAME).read_text().startswith(f"pid {holder.pid} ")
    assert train()[0] == 0
    assert f"taking over the lock of a run that no longer runs (pid {holder.pid} " in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_a_second_claim_in_the_same_process_is_refused(tmp_path):
    with claimed_run_folder(tmp_path / "run"):
        with pytest.raises(ConfigError, match="in use by a run"):
            with claimed_run_folder(tmp_path / "run"):
                pass
    with claimed_run_folder(tmp_path / "run"):  # released: free again
        pass


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "read-only"])
def test_file_system_problems_are_one_line_naming_the_path(train, tmp_path, monkeypatch, case):
    out = tmp_path / "run"
    if case == "out is a file":
        out.write_text("notes")
        expected = f"error: {out}: --out names a file, not a folder"
    elif case == "out under a file":
        (tmp_path / "notes").write_text("notes")
        out = tmp_path / "notes" / "run"
        expected = f"error: {out}: cannot create the run folder: {tmp_path / 'notes'} is a file"
    else:  # injected: the tests may run as root, whom a read-only folder does not stop
        def read_only(self, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        monkeypatch.setattr(Path, "mkdir", read_only)
        expected = f"error: {out}: cannot create the run folder (Read-only file system)"
    code, err = train(out=out)
    assert code == 2 and one_line_error(err) == expected
