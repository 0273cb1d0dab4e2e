"""The backend registry, per-model backends and options, and the run file (one schema everywhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdeval.backends import registry
from kdeval.backends.local import resolve_dtype
from kdeval.cli import main
from kdeval.compare import compare
from kdeval.errors import UserError
from kdeval.results import RunResult
from kdeval.runconfig import load_run_config
from tests.fakes import ScriptedBackend, fake_checkpoint, toy_catalog


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party backend, registered the way a package's entry point registers it."""
    monkeypatch.setattr(registry, "_third_party", lambda: {"scripted": "tests.fakes:KIND"})
    ScriptedBackend.served = []


def _ckpt(root: Path, name: str, config: dict[str, object] | None = None) -> str:
    return fake_checkpoint(root / name, name, config)  # its payload makes its fingerprint


def _run_file(tmp: Path, text: str) -> Path:
    f = tmp / "run.yaml"
    f.write_text(text)
    return f


def _compare(file: Path) -> RunResult:
    config, lines = load_run_config(file)
    spec = config.run_spec(lines=lines, file=file)
    return compare(spec, toy_catalog(), argv=["kdeval", "compare", "--config", str(file)], log=lambda m: None)


# -- the registry -----------------------------------------------------------------------------


def test_names_import_no_backend() -> None:
    code = (
        "import sys; from kdeval.backends import names; print(names()); "
        "print(sorted({'torch', 'transformers', 'vllm', 'openai'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["['vllm', 'hf', 'openai']", "[]"]


def test_unknown_backend_suggests_the_closest() -> None:
    with pytest.raises(UserError, match="unknown backend 'vlm'; did you mean 'vllm'?"):
        registry.get("vlm")


def test_a_third_party_backend_is_one_file_plus_one_registration(scripted: None, tmp_path: Path) -> None:
    assert "scripted" in registry.names()
    f = _run_file(
        tmp_path,
        f"""models:
  teacher:
    path: {_ckpt(tmp_path, "good_teacher")}
    backend: scripted
  distilled: {{path: {_ckpt(tmp_path, "bad_student")}, backend: scripted, options: {{flavour: x}}}}
out: {tmp_path / "out"}
""",
    )
    result = _compare(f)
    entries = {m.name: m for m in result.models}
    assert entries["teacher"].backend == "scripted" and entries["distilled"].options["flavour"] == "x"
    assert entries["distilled"].output_options == {"flavour": "x"}  # workers only paces: left out
    assert result.value("teacher", "toy_choice", "accuracy") == 100.0


def test_placement_options_reuse_the_store_and_output_options_do_not(scripted: None, tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, "good_model")

    def run(options: str) -> int:
        ScriptedBackend.served = []
        body = (
            f"models:\n  m: {{path: {ckpt}, backend: scripted, options: {options}}}\nout: {tmp_path / 'o'}\n"
        )
        _compare(_run_file(tmp_path, body))
        return len(ScriptedBackend.served)

    assert run("{workers: 1}") == 50
    assert run("{workers: 8}") == 0  # more workers: the same outputs, all reused
    assert run("{workers: 8, flavour: spicy}") == 50  # an option that changes outputs runs again


# -- the run file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("models:\n  m: {path: CKPT}\nlimt: 3\n", 3, "unknown key 'limt'; keys: models, suites"),
        ("models:\n  m:\n    path: CKPT\n    backnd: hf\n", 4, "unknown key 'models.m.backnd'"),
        ("models:\n  m: {path: CKPT}\ntop_p: 2\n", 3, "top_p: Input should be less than or equal to 1"),
        (
            "models:\n  m:\n    path: CKPT\n    backend: scripted\n    options:\n      flavor: x\n",
            6,
            "unknown scripted option 'flavor' for model 'm'; did you mean flavour?",
        ),
        (
            "models:\n  m:\n    path: CKPT\n    backend: scripted\n    options:\n      workers: many\n",
            6,
            "scripted option 'workers' of model 'm': Input should be a valid integer",
        ),
        ("models:\n  m:\n    path: CKPT\n    backend: onnx\n", 4, "unknown backend 'onnx'"),
        ("models:\n  m:\n    path: CKPT\n    dtype: fp12\n", 4, "unknown dtype 'fp12'"),
        ("models:\n  m: {path: CKPT}\n  a b: {path: CKPT}\n", 3, "models.a b"),
    ],
)
def test_run_file_errors_name_file_and_line(
    scripted: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, line: int, message: str
) -> None:
    f = _run_file(tmp_path, body.replace("CKPT", _ckpt(tmp_path, "c")) + f"out: {tmp_path / 'o'}\n")
    assert main(["compare", "--config", str(f), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{f}:{line}: " in err and message in err, err
    assert not (tmp_path / "o").exists()


def test_flags_override_the_run_file(scripted: None, tmp_path: Path) -> None:
    from kdeval.cli import build_parser, spec_from_args

    f = _run_file(
        tmp_path,
        f"models:\n  teacher: {{path: {_ckpt(tmp_path, 't')}, backend: scripted}}\nlimit: 5\nseed: 3\n",
    )
    args = build_parser().parse_args(
        ["compare", "--config", str(f), "--limit", "7", "--distilled", _ckpt(tmp_path, "d"),
         "--option", "teacher.flavour=x", "--model-backend", "distilled=scripted"]
    )  # fmt: skip
    spec = spec_from_args(args)
    assert (spec.limit, spec.seed) == (7, 3)
    teacher, distilled = spec.models
    assert teacher.options == {"flavour": "x"} and distilled.backend == "scripted"
    assert teacher.where_of("") == f"{f}:2"


def test_a_server_url_selects_the_openai_backend(tmp_path: Path) -> None:
    from kdeval.cli import build_parser, spec_from_args

    args = build_parser().parse_args(["compare", "--teacher", "http://127.0.0.1:9/v1", "--backend", "hf"])
    (teacher,) = spec_from_args(args).models
    assert teacher.backend == "openai" and teacher.options == {"base_url": "http://127.0.0.1:9/v1"}


def test_option_for_an_unknown_model_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = [
        "compare",
        "--teacher",
        _ckpt(tmp_path, "t"),
        "--option",
        "student.x=1",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "--option: no model named 'student' (models: teacher)" in capsys.readouterr().err


# -- dtype: auto ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "asked", "resolved"),
    [
        ({"torch_dtype": "bfloat16"}, "auto", "bfloat16"),
        ({"dtype": "float16"}, "auto", "float16"),  # transformers 5 writes `dtype`
        ({}, "auto", "float32"),  # no dtype in the config: transformers loads float32
        ({"torch_dtype": "bfloat16"}, "float32", "float32"),  # asked for explicitly
        ({}, "half", "float16"),
    ],
)
def test_auto_dtype_is_the_checkpoints_own(
    tmp_path: Path, config: dict[str, str], asked: str, resolved: str
) -> None:
    assert resolve_dtype(_ckpt(tmp_path, "m", config), asked) == resolved


def test_auto_dtype_of_a_hub_id_is_left_to_the_backend() -> None:
    assert resolve_dtype("org/model", "auto") == "auto"


# -- vLLM engine options ------------------------------------------------------------------------

needs_vllm = pytest.mark.skipif(not registry.vllm_available(), reason="vllm is not installed")


@pytest.mark.vllm
@needs_vllm
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("tensr_parallel_size: 2", "unknown vLLM engine option 'tensr_parallel_size' for model 'm' (vLLM "),
        ("tensor_parallel_size: 3", "heads (2) must be divisible by tensor parallel size (3)"),
        ("data_parallel_size: 64", "asks for 64 workers (tensor 1 × pipeline 1 × data 64), but this machine"),
        ("pipeline_parallel_size: 4", "pipeline_parallel_size 4 is more than its 2 layers"),
        ("dtype: float16", "engine option 'dtype' of model 'm' is kdeval's to set"),
        ("quantization: bogus", "Unknown quantization method: bogus"),
    ],
)
def test_vllm_engine_options_are_checked_before_any_model_starts(
    vllm_loaded: None, tiny_model_dir: Path, tmp_path: Path, options: str, message: str
) -> None:
    from kdeval.backends import resolve

    f = _run_file(
        tmp_path,
        f"models:\n  m:\n    path: {tiny_model_dir}\n    backend: vllm\n    options:\n      {options}\n",
    )
    config, lines = load_run_config(f)
    spec = config.run_spec(lines=lines, file=f)
    with pytest.raises(UserError) as err:
        resolve(spec, spec.models[0])
    assert str(err.value).startswith(f"{f}:6: ") and message in str(err.value), str(err.value)


@pytest.mark.vllm
@needs_vllm
def test_a_bad_engine_option_is_one_line_from_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    argv = ["compare", "--teacher", str(tiny_model_dir), "--backend", "vllm", "--out", str(tmp_path / "o")]
    argv += ["--option", "teacher.tensor_parallel_size=3", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "kdeval.cli", *argv], capture_output=True, text=True)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert last.startswith("kdeval: error: vLLM refuses the engine options of model 'teacher': Total number")
    assert not (tmp_path / "o").exists()


@pytest.mark.vllm
@needs_vllm
def test_parallel_sizes_and_limits_do_not_key_the_store_but_kv_cache_dtype_does(tiny_model_dir: Path) -> None:
    from kdeval.backends import resolve
    from kdeval.config import ModelSpec, RunSpec

    def settings_hash(**options: object) -> str:
        model = ModelSpec(name="m", path=str(tiny_model_dir), backend="vllm", options=options)
        return resolve(RunSpec(models=[model], backend="vllm"), model).settings_hash()

    plain = settings_hash()
    assert settings_hash(max_num_seqs=8, enforce_eager=True, gpu_memory_utilization=0.5) == plain
    assert settings_hash(tensor_parallel_size=2) == plain
    assert settings_hash(kv_cache_dtype="fp8") != plain


def test_the_example_run_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    config, lines = load_run_config(root / "examples" / "run.yaml")
    spec = config.run_spec(lines=lines, file=root / "examples" / "run.yaml")
    teacher, baseline, distilled = spec.models
    assert teacher.backend == "openai" and teacher.options["api_key_env"] == "TEACHER_API_KEY"
    assert baseline.options == {"data_parallel_size": 2} and distilled.backend == "vllm"
    assert distilled.where_of("options.tensor_parallel_size") == f"{root / 'examples' / 'run.yaml'}:28"


def test_the_gate_refuses_runs_whose_model_options_change_outputs(scripted: None, tmp_path: Path) -> None:
    from kdeval.gate import differences
    from kdeval.runs import load_run

    ckpt = _ckpt(tmp_path, "good_model")

    def run(name: str, options: str) -> Path:
        body = f"models:\n  distilled: {{path: {ckpt}, backend: scripted, options: {options}}}\n"
        _compare(_run_file(tmp_path, body + f"out: {tmp_path / name}\n"))
        return tmp_path / name / "results.json"

    base, paced, spicy = run("a", "{workers: 1}"), run("b", "{workers: 8}"), run("c", "{flavour: spicy}")
    assert differences(load_run(base), load_run(paced), "distilled", "distilled", []) == []
    why = differences(load_run(base), load_run(spicy), "distilled", "distilled", [])
    assert why == ["distilled's output options {'flavour': 'plain'} vs {'flavour': 'spicy'}"]
