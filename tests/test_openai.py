"""The openai backend against a real vLLM server (one per session), a fault-injecting proxy in
front of it, and a server killed mid-run. No mocks on the main path."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from kdeval.backends import vllm_available
from kdeval.cli import main
from kdeval.compare import compare
from kdeval.config import ModelSpec, RunSpec
from kdeval.efficiency.bench import BenchConfig
from kdeval.plugins import load_catalog
from kdeval.results import RunResult
from kdeval.runs import read_results
from tests.servers import FaultProxy, Faults, VLLMServer, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm is not installed"),
]

# multiple choice by log-likelihood, generation with stop strings, and two-turn chat
TASKS = ["nli_synth", "math_synth", "chat_synth"]
LIMIT = 12


def served(url: str, **options: Any) -> dict[str, Any]:
    return {"backend": "openai", "options": {"base_url": url, "concurrency": 8, **options}}


def run(out: Path, models: dict[str, Any], *, efficiency: BenchConfig | None = None) -> RunResult:
    specs = []
    for name, m in models.items():
        entry = m if isinstance(m, dict) else {"path": str(m), "backend": "vllm"}
        role = name if name in ("teacher", "baseline", "distilled") else "other"
        specs.append(ModelSpec(name=name, role=role, **entry))
    spec = RunSpec(models=specs, tasks=TASKS, limit=LIMIT, out=out, backend="vllm")
    return compare(spec, load_catalog(), argv=["test"], log=lambda m: None, efficiency=efficiency)


def records(out: Path, model: str, task: str) -> list[dict[str, Any]]:
    lines = (out / "samples" / model / f"{task}.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


@pytest.fixture(scope="module")
def clean(vllm_server: VLLMServer, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The teacher on the server, the same checkpoint offline as the distilled student."""
    out = tmp_path_factory.mktemp("served") / "run"
    run(out, {"teacher": served(vllm_server.base_url), "distilled": tiny_model_dir})
    return out


def test_a_served_model_gives_what_offline_vllm_gives(clean: Path) -> None:
    result = read_results(clean / "results.json")
    for task in TASKS:
        t, d = records(clean, "teacher", task), records(clean, "distilled", task)
        assert [r["id"] for r in t] == [r["id"] for r in d]
        for a, b in zip(t, d, strict=True):
            assert a["output"] == b["output"], (task, a["id"])  # identical text, greedy
            assert a["answer"] == b["answer"] and a["scores"] == b["scores"]
            if a["choice_logprobs"]:
                for x, y in zip(a["choice_logprobs"][0], b["choice_logprobs"][0], strict=True):
                    assert abs(x - y) < 1e-4
        for row in (s for s in result.scores if s.task == task):
            assert row.value == result.value("distilled", task, row.metric)
    assert all(a.value == 100.0 for a in result.agreement)


def test_the_remote_model_is_identified_by_the_server(clean: Path, vllm_server: VLLMServer) -> None:
    result = read_results(clean / "results.json")
    teacher = result.model("teacher")
    assert teacher is not None and teacher.remote is True and teacher.backend == "openai"
    assert teacher.path == vllm_server.base_url and (teacher.server or {})["root"] == str(vllm_server.model)
    assert "concurrency" not in teacher.output_options  # requests in flight do not change outputs
    assert "remote" in (clean / "report.md").read_text()


def test_injected_faults_leave_the_results_identical(
    vllm_server: VLLMServer, clean: Path, tmp_path: Path
) -> None:
    faults = Faults(every=12, at={2: "429", 5: "500", 8: "drop", 11: "stall"}, stall_s=5.0)
    upstream = vllm_server.base_url.removesuffix("/v1")
    with FaultProxy(upstream, faults) as proxy:
        out = tmp_path / "faulty"
        run(out, {"teacher": served(proxy.base_url, timeout=2.0, max_retries=10)})
    assert all(faults.counts.get(k, 0) > 0 for k in ("429", "500", "drop", "stall")), faults.counts
    for task in TASKS:
        a, b = records(out, "teacher", task), records(clean, "teacher", task)
        assert [(r["output"], r["answer"], r["scores"]) for r in a] == [
            (r["output"], r["answer"], r["scores"]) for r in b
        ]


def test_the_api_key_is_never_written(vllm_server: VLLMServer, tmp_path: Path, capsys: Any) -> None:
    secret = "sk-kdeval-test-do-not-write-8c1f"
    os.environ["KDEVAL_TEST_API_KEY"] = secret
    try:
        out = tmp_path / "keyed"
        cfg = BenchConfig(num_prompts=2, throughput_prompts=4, output_len=8, warmup=1, repeats=1)
        result = run(
            out, {"teacher": served(vllm_server.base_url, api_key_env="KDEVAL_TEST_API_KEY")}, efficiency=cfg
        )
    finally:
        del os.environ["KDEVAL_TEST_API_KEY"]
    fig = result.efficiency["teacher"]
    assert fig.error is None, fig.error
    assert fig.remote is True and fig.n_params is None
    assert (fig.model_extra or {})["memory_source"] == "remote"
    assert (fig.number("ttft_ms", "p50") or 0) > 0 and (
        fig.number("throughput", "output_tokens_per_s") or 0
    ) > 0
    assert (fig.model_extra or {})["output_tokens"] == {
        "min": 8,
        "max": 8,
        "requested": 8,
    }  # ignore_eos on the server
    captured = capsys.readouterr()
    written = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    assert all(secret.encode() not in b for b in written) and secret not in captured.out + captured.err


def _one_line_error(capsys: Any, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kdeval: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            "{base_url: 'http://127.0.0.1:PORT/v1'}",
            "cannot reach the server of model 'teacher' at http://127.0.0.1:",
        ),
        ("{base_url: URL, model: no-such-model}", "model 'no-such-model' is not served at"),
        ("{base_url: URL, api_key_env: KDEVAL_TEST_UNSET_KEY}", "environment variable KDEVAL_TEST_UNSET_KEY"),
        ("{base_url: URL, concurrency: 0}", "openai option 'concurrency' of model 'teacher'"),
    ],
)
def test_bad_server_input_is_one_line(
    vllm_server: VLLMServer, tmp_path: Path, capsys: Any, options: str, message: str
) -> None:
    text = options.replace("URL", vllm_server.base_url).replace("PORT", str(free_port()))
    f = tmp_path / "run.yaml"
    body = f"models:\n  teacher:\n    backend: openai\n    options: {text}\ntasks: [math_synth]\n"
    f.write_text(body + f"out: {tmp_path / 'o'}\n")
    err = _one_line_error(capsys, ["compare", "--config", str(f), "--quiet"])
    assert message in err and f"{f}:" in err
    assert not (tmp_path / "o").exists()


def test_log_likelihood_on_an_endpoint_without_log_probs_is_refused_up_front(
    vllm_server: VLLMServer, tmp_path: Path, capsys: Any
) -> None:
    with FaultProxy(vllm_server.base_url.removesuffix("/v1"), Faults(no_logprobs=True)) as proxy:
        argv = ["compare", "--teacher", proxy.base_url, "--task", "nli_synth", "--task", "math_synth"]
        err = _one_line_error(capsys, [*argv, "--out", str(tmp_path / "o"), "--quiet"])
    assert "returns no prompt log-probs" in err and "multiple_choice" in err
    assert not (tmp_path / "o").exists()


def _stored(store: Path) -> int:
    if not store.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_server_stops_the_run_and_the_same_command_resumes(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    argv = [
        sys.executable, "-m", "kdeval.cli", "compare", "--teacher", vllm_server.base_url,
        "--option", "teacher.concurrency=2", "--option", "teacher.max_retries=1",
        "--option", "teacher.timeout=5",
        "--task", "math_synth", "--limit", "150", "--no-efficiency", "--out", str(out), "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _stored(out / "store.sqlite") < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    vllm_server.kill()
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        vllm_server.start()  # the session's other tests need it back
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert (
        "Traceback" not in err
        and last.startswith("kdeval: error: ")
        and "requests finished and are stored" in last
    )
    done = _stored(out / "store.sqlite")
    assert 10 <= done < 150
    again = subprocess.run(argv[:-1], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (
        f"teacher: stage 1: {done} of 150 requests reused from the store, {150 - done} to run" in again.stderr
    )


# -- the trainer with a served teacher ------------------------------------------------------------

PAIRS = [(f"What is {a} plus {b}?", f" {a + b}") for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (6, 3), (4, 4)]]


def _train_file(tmp: Path, responses: bool = True) -> str:
    f = tmp / "train.jsonl"
    rows = [{"prompt": p, **({"response": r} if responses else {})} for p, r in PAIRS]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(f)


def _distill(tmp: Path, student: Path, **kw: Any) -> Any:
    from kdeval.distill import make_config

    values = {
        "student": str(student),
        "lr": 1e-3,
        "batch_size": 2,
        "grad_accum": 1,
        "epochs": 1,
        "max_len": 32,
    }
    return make_config({**values, "checkpoint_every": 0, **kw})


def test_seqkd_from_a_served_teacher_writes_what_the_teacher_says(
    vllm_server: VLLMServer, tiny_model_dir: Path, tiny_model_dir_b: Path, tmp_path: Path
) -> None:
    from kdeval.backends import load_backend
    from kdeval.backends.base import GenerationSettings
    from kdeval.distill import train
    from kdeval.tasks import GenerateRequest, user_turn

    cfg = _distill(
        tmp_path, tiny_model_dir_b, method="seqkd", teacher=vllm_server.base_url, teacher_max_tokens=8,
        train=_train_file(tmp_path, responses=False), out=str(tmp_path / "out"),
    )  # fmt: skip
    train(cfg, progress=False)
    answers = {r["id"]: r["response"] for r in map(json.loads, cfg.responses_path().read_text().splitlines())}
    local = load_backend("hf", str(tiny_model_dir), GenerationSettings(dtype="float32"))
    texts: dict[int, str] = {}
    local.run(
        [GenerateRequest(user_turn(p), max_tokens=8) for p, _ in PAIRS],
        lambda i, o: texts.update({i: o.text}),
    )
    local.close()
    assert sorted(answers.values()) == sorted(texts.values())  # the server's greedy answers, as offline


def test_a_topk_cache_from_the_server_matches_the_teacher_loaded_here(
    vllm_server: VLLMServer, tiny_model_dir: Path, tiny_model_dir_b: Path, tmp_path: Path
) -> None:
    """--topk K with a URL teacher: vLLM's prompt_logprobs=K fill the same cache the trainer builds
    from the teacher's own logits (temperature 1)."""
    from kdeval.distill import train
    from kdeval.distill.topk import META, TopkCache

    data = _train_file(tmp_path)
    common = {"method": "kd", "topk": 8, "train": data}
    served = _distill(
        tmp_path, tiny_model_dir_b, teacher=vllm_server.base_url, out=str(tmp_path / "s"), **common
    )
    local = _distill(
        tmp_path, tiny_model_dir_b, teacher=str(tiny_model_dir), out=str(tmp_path / "l"), **common
    )
    a, b = train(served, progress=False), train(local, progress=False)
    caches = [TopkCache(c.topk_dir(), json.loads((c.topk_dir() / META).read_text())) for c in (served, local)]
    assert len(caches[0]) == len(caches[1]) == len(PAIRS)
    for i in range(len(PAIRS)):
        (si, sl), (li, ll) = caches[0].rows(i), caches[1].rows(i)
        assert si.shape == li.shape and sl.shape == ll.shape
        assert (si == li).float().mean() > 0.95  # ties at the k-th place may swap
        assert torch.allclose(sl[:, 0], ll[:, 0], atol=1e-3) and torch.allclose(
            sl[:, -1], ll[:, -1], atol=1e-3
        )
    assert abs(a.final_loss - b.final_loss) < 1e-2


def test_logit_distillation_from_a_server_needs_topk(tiny_model_dir_b: Path, tmp_path: Path) -> None:
    from kdeval.errors import UserError

    with pytest.raises(UserError, match="served teacher needs --topk K"):
        _distill(tmp_path, tiny_model_dir_b, method="kd", teacher="http://127.0.0.1:9/v1", train="x", out="o")
    with pytest.raises(UserError, match="needs temperature 1"):
        _distill(
            tmp_path,
            tiny_model_dir_b,
            method="kd",
            topk=4,
            temperature=2.0,
            teacher="http://h/v1",
            train="x",
            out="o",
        )


def test_the_chat_endpoint_serves_generation_tasks_with_the_servers_template(
    vllm_server: VLLMServer, tmp_path: Path
) -> None:
    out = tmp_path / "chat"
    models = {"teacher": served(vllm_server.base_url, endpoint="chat")}
    specs = [ModelSpec(name="teacher", role="teacher", **models["teacher"])]
    spec = RunSpec(models=specs, tasks=["math_synth"], limit=4, out=out, backend="vllm")
    result = compare(spec, load_catalog(), argv=["test"], log=lambda m: None)
    teacher = result.models[0]
    assert teacher.chat_template is True and teacher.output_options["endpoint"] == "chat"
    assert all(r["output"][0] for r in records(out, "teacher", "math_synth"))  # answers came back
