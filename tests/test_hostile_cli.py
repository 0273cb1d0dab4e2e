"""Hostile input through the real entry point: each refusal is one line on stderr, exit 2, no
traceback, nothing written into --out; and what must still run runs (with a warning if due)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdeval.errors import UserError
from kdeval.outdir import LOCK_NAME, hold
from kdeval.yamlfile import read_yaml

ROOT = Path(__file__).resolve().parents[1]
NLI_TEST = ROOT / "suites" / "nli" / "data" / "test.jsonl"


def kdeval(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *argv], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused command."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kdeval: error: ")
    return lines[0]


def compare(model: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--baseline", str(model), "--backend", "hf", "--no-efficiency", "--limit", "2",
            "--out", str(out), "--quiet", *extra]  # fmt: skip


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "--temperature: Input should be greater than or equal to 0"),
        (["--top-p", "0"], "--top-p: Input should be greater than 0"),
        (["--top-p", "1.5"], "--top-p: Input should be less than or equal to 1"),
        (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
        (["--max-model-len", "0"], "--max-model-len: Input should be greater than or equal to 1"),
        (["--dtype", "fp12"], "--dtype: unknown dtype 'fp12'"),
    ],
)
def test_bad_settings_are_refused(
    tiny_model_dir: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    line = refused(kdeval(*compare(tiny_model_dir, out, *flags)))
    assert message in line and "; " in line  # what, then how to fix it
    assert not out.exists()


def test_out_that_is_a_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    assert "is a file, not a folder" in refused(kdeval(*compare(tiny_model_dir, f)))
    assert f.read_text() == "keep me"


def test_out_inside_a_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "results.txt"
    f.write_text("keep me")
    assert f"cannot be created: {f} is a file" in refused(kdeval(*compare(tiny_model_dir, f / "run")))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_that_cannot_be_written(tiny_model_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = refused(kdeval(*compare(tiny_model_dir, locked / "run")))
    finally:
        locked.chmod(0o755)
    assert "cannot be written" in line and not (locked / "run").exists()


def test_data_alone_runs_only_that_task(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = kdeval(*compare(tiny_model_dir, out, "--data", f"nli_synth={NLI_TEST}"))
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads((out / "results.json").read_text())["tasks"]
    assert [t["name"] for t in tasks] == ["nli_synth"] and tasks[0]["data_file"] == str(NLI_TEST)


def test_one_checkpoint_in_two_roles_warns_and_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = compare(tiny_model_dir, out, "--task", "nli_synth", "--distilled", f"{tiny_model_dir}/.")
    proc = kdeval(*argv)
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1, proc.stderr
    assert "models 'baseline' and 'distilled' are the same checkpoint" in warnings[0]
    assert (out / "results.json").is_file()


# --- one run per output folder -----------------------------------------------------------------


def test_a_second_compare_on_the_same_out_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with hold(out, ["kdeval", "compare", "--out", str(out)]):
        line = refused(kdeval(*compare(tiny_model_dir, out)))
        note = (out / LOCK_NAME).read_text()
    assert f"is in use by another kdeval run (pid {os.getpid()}: kdeval compare --out {out})" in line
    assert note.startswith(f"{os.getpid()}\n")  # the refused run did not touch the holder's note
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # and wrote nothing else


HOLDER = """
import os, pathlib, sys, time
from kdeval.outdir import hold
with hold(pathlib.Path(sys.argv[1]), ["holder"]):
    child = os.fork()  # as an engine's worker would be: it must not keep the lock alive
    if child == 0:
        time.sleep(60)
        os._exit(0)
    pathlib.Path(sys.argv[2]).write_text(str(child))
    time.sleep(60)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    out, child_pid = tmp_path / "out", tmp_path / "child.pid"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(child_pid)])
    child = 0
    try:
        deadline = time.monotonic() + 60
        while not child_pid.is_file() or not child_pid.read_text():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        child = int(child_pid.read_text())
        with pytest.raises(UserError, match=f"pid {holder.pid}: holder"), hold(out, ["second"]):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with hold(out, ["third"]):  # the kernel released the dead process's lock; its child has none
            assert (out / LOCK_NAME).read_text().startswith(f"{os.getpid()}\n")
    finally:
        holder.kill()
        holder.wait()
        if child:
            os.kill(child, signal.SIGKILL)


def test_the_gate_goes_through_the_same_lock(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cand"
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        f"compare:\n  models: {{distilled: {tiny_model_dir}}}\n  tasks: [nli_synth]\n  backend: hf\n"
        f"  limit: 2\n  efficiency: false\n  out: {out}\n"
    )
    with hold(out, ["kdeval", "compare"]):
        line = refused(kdeval("gate", "--config", str(gate), "--compare-only"))
    assert f"pid {os.getpid()}" in line


# --- YAML ---------------------------------------------------------------------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text(LAUGHS)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"run\.yaml:6: too many alias expansions"):
        read_yaml(f, missing="", fix="")
    assert time.perf_counter() - start < 1.0
    assert "too many alias expansions" in refused(kdeval("compare", "--config", str(f)))


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("models:\n  teacher: &t [x, *t]\n")
    assert f"{f}:2: recursive alias" in refused(kdeval("compare", "--config", str(f)))


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("opts: &o {dtype: float32}\nteacher: *o\nstudent: *o\n")
    assert read_yaml(f, missing="", fix="")[0]["student"] == {"dtype": "float32"}


def test_a_nul_byte_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_bytes(b"models:\n  teacher: t\nlimit: 2\x00\n")
    assert f"{f}:3: malformed YAML (character #x0000" in refused(kdeval("compare", "--config", str(f)))


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_bytes(b"models:\n  teacher: t\n\xff\xfe\n")
    assert f"{f}:3: not UTF-8 text" in refused(kdeval("compare", "--config", str(f)))


# --- pipeline.yaml: compare: is checked before any training --------------------------------------

PIPELINE = """\
teacher: {model}
student: {model}
task_type: nli
data:
  train: nli_synth:4
distill: {{method: kd, max_steps: 1, batch_size: 2, grad_accum: 1}}
compare:
  backend: hf
  efficiency: false
{extra}out: {out}
"""


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("  tasks: [nli_synth, nope]\n", 10, "unknown task 'nope'"),
        ("  data:\n    nli_synth: missing.jsonl\n", 11, "data file for task 'nli_synth' not found"),
        ("  data:\n    nli_synth: {bad}\n", 0, ":2: malformed JSON"),
    ],
)
def test_pipeline_compare_errors_come_before_training(
    tiny_model_dir: Path, tmp_path: Path, extra: str, line: int, message: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(NLI_TEST.read_text().splitlines()[0] + "\n{oops\n")
    out = tmp_path / "out"
    file = tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE.format(model=tiny_model_dir, out=out, extra=extra.format(bad=bad)))
    err = refused(kdeval("run", str(file), "--quiet", cwd=tmp_path))
    assert message in err and (f"{file}:{line}: " in err if line else str(bad) in err), err
    assert not out.exists()  # nothing trained, nothing written


def test_a_second_pipeline_on_the_same_out_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    file = tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE.format(model=tiny_model_dir, out=out, extra=""))
    with hold(out, ["kdeval", "run", "other.yaml"]):
        err = refused(kdeval("run", str(file), "--quiet"))
    assert f"{file}:10: out: {out} is in use by another kdeval run (pid {os.getpid()}" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
