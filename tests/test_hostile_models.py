"""Broken model directories through the real CLI: one stderr line, exit 2, no traceback, no OUT.

Each case copies the session's tiny model and damages the copy. The checks (kdeval.modeldir) run
when the backend resolves the model, before any engine starts and before OUT is created, so the
vLLM variants fail the same way without loading vLLM's engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kdeval.backends.registry import vllm_available
from kdeval.errors import UserError
from kdeval.modeldir import check_model

ROOT = Path(__file__).parent.parent


def _set(key: str, value: object) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        config = json.loads((d / "config.json").read_text())
        if value is None:
            config.pop(key)
        else:
            config[key] = value
        (d / "config.json").write_text(json.dumps(config))

    return damage


def _write(name: str, text: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / name).write_text(text)

    return damage


def _truncate(d: Path) -> None:
    f = d / "model.safetensors"
    os.truncate(f, f.stat().st_size // 2)


def _missing_shard(d: Path) -> None:
    """An index over two shards, the second of which was never copied."""
    head = (d / "model.safetensors").read_bytes()
    n = int.from_bytes(head[:8], "little")
    names = sorted(k for k in json.loads(head[8 : 8 + n]) if k != "__metadata__")
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    shard = {k: "model-00001-of-00002.safetensors" for k in names}
    shard[names[-1]] = "model-00002-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shard}))


def _remote_code(d: Path) -> None:
    _set("model_type", "tiny_custom")(d)
    _set(
        "auto_map",
        {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.Tiny"},
    )(d)
    (d / "modeling_tiny.py").write_text("raise SystemExit('remote code ran')\n")
    (d / "configuration_tiny.py").write_text("raise SystemExit('remote code ran')\n")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "config_not_json": (_write("config.json", '{"model_type": "llama",'), "is not valid JSON"),
    "config_not_an_object": (_write("config.json", "[1, 2]"), "is not a JSON object"),
    "config_without_model_type": (_set("model_type", None), "names no model_type"),
    "unknown_model_type": (_set("model_type", "no_such_architecture"), "'no_such_architecture'"),
    "no_tokenizer_files": (lambda d: (d / "tokenizer.json").unlink(), "has no tokenizer files"),
    "truncated_safetensors": (_truncate, "is cut short"),
    "missing_shard": (_missing_shard, "model-00002-of-00002.safetensors"),
    "remote_code_not_trusted": (_remote_code, "--trust-remote-code"),
}


def _cli(model: str, out: Path, backend: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    argv = ["compare", "--model", f"m={model}", "--backend", backend, "--task", "nli_synth", "--limit", "2"]
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",  # nothing here may reach the network
        "HF_HOME": str(cwd / "hf_home"),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "kdeval.cli", *argv, "--no-efficiency", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=300,
    )


def _refused(proc: subprocess.CompletedProcess[str], out: Path, *expected: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdeval: error: ")
    for text in expected:
        assert text in err, err
    assert not out.exists()  # refused before OUT (and its store.sqlite) was created
    return err


_VLLM = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.skipif(not vllm_available(), reason="no vllm")]
BACKENDS = [pytest.param("hf", id="hf"), pytest.param("vllm", id="vllm", marks=_VLLM)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_broken_model_directory_is_one_line(
    tiny_model_dir: Path, tmp_path: Path, case: str, backend: str
) -> None:
    damage, expected = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    damage(model)
    out = tmp_path / "out"
    _refused(_cli(str(model), out, backend, tmp_path), out, expected, str(model))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_relative_path_that_does_not_exist_is_a_missing_directory(tmp_path: Path, backend: str) -> None:
    (tmp_path / "checkpoints").mkdir()
    for path in ("checkpoints/student", "./student", "runs/a/student"):
        out = tmp_path / "out"
        err = _refused(
            _cli(path, out, backend, tmp_path, HF_ENDPOINT="http://127.0.0.1:9"), out, "does not exist"
        )
        assert "taken as a Hugging Face hub id" not in err and path in err


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offline", [True, False], ids=["offline", "unreachable"])
def test_a_hub_id_that_cannot_be_fetched_says_it_was_taken_as_one(
    tmp_path: Path, backend: str, offline: bool
) -> None:
    # offline: HF_HUB_OFFLINE=1; unreachable: online, but the hub endpoint refuses connections
    env = {"HF_ENDPOINT": "http://127.0.0.1:9"} if not offline else {}
    if not offline:
        env["HF_HUB_OFFLINE"] = "0"
    out = tmp_path / "out"
    err = _refused(_cli("no-such-org/no-such-model", out, backend, tmp_path, **env), out)
    assert (
        "'no-such-org/no-such-model' is not a local directory, so it was taken as a Hugging Face hub id"
        in err
    )
    assert "the hub could not be reached" in err and err.endswith("pass an existing directory")


def test_trusted_remote_code_must_be_in_the_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _remote_code(model)
    check_model("m", str(model), trust_remote_code=True)  # trusted, and its code is there
    (model / "modeling_tiny.py").unlink()
    with pytest.raises(UserError, match=r"modeling_tiny\.py does not exist"):
        check_model("m", str(model), trust_remote_code=True)


def test_a_known_model_type_with_an_auto_map_runs_the_library_code(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """As transformers does: a type it knows loads its own implementation, never the repo's."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _set("auto_map", {"AutoModelForCausalLM": "modeling_tiny.Tiny"})(model)
    check_model("m", str(model))  # no error, no trust needed
