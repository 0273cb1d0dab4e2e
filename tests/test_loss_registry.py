"""Distillation methods come from one registry (kdeval.distill.methods): the built-ins keep their
behaviour and the CLI's choices, and a third-party method is one file plus one entry point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from kdeval.distill import methods
from kdeval.distill.config import DistillConfig
from kdeval.distill.losses import LossSpec, forward_kl, generalized_jsd, skew_kl, total_variation

REVERSE_KL = """
from kdeval.distill.losses import forward_kl
from kdeval.distill.methods import LossMethod


def reverse_kl(s_logp, t_logp, spec):
    return forward_kl(s_logp, t_logp)


METHOD = LossMethod("rkl", "reverse KL(p_S || p_T)", divergence=reverse_kl)
"""


@pytest.fixture
def rkl_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package registering the method `rkl`, as pip would leave it (code + .dist-info)."""
    (tmp_path / "kd_rkl").mkdir()
    (tmp_path / "kd_rkl" / "__init__.py").write_text(textwrap.dedent(REVERSE_KL))
    info = tmp_path / "kd_rkl-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kd_rkl\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kdeval.losses]\nrkl = kd_rkl:METHOD\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(methods, "_LOADED", {})
    return tmp_path


def _logps() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    return s.log_softmax(-1), t.log_softmax(-1)


def test_builtin_methods_and_what_they_need() -> None:
    assert methods.names() == ["sft", "seqkd", "kd", "jsd", "tvd", "skl", "gkd"]
    assert methods.token_methods() == ["kd", "jsd", "tvd", "skl", "gkd"]
    assert methods.topk_methods() == ["kd", "jsd", "tvd", "skl"]  # gkd's sequences are written in training
    assert methods.teacher_methods() == ["seqkd", "kd", "jsd", "tvd", "skl", "gkd"]
    assert [n for n in methods.names() if methods.get(n).on_policy] == ["gkd"]
    assert [methods.get(n).teacher for n in ("sft", "seqkd", "kd")] == ["none", "text", "logits"]


def test_builtin_divergences_are_unchanged() -> None:
    s, t = _logps()
    expected = {
        "kd": forward_kl(t, s),
        "jsd": generalized_jsd(s, t, 0.3),
        "gkd": generalized_jsd(s, t, 0.3),
        "tvd": total_variation(s, t),
        "skl": skew_kl(s, t, 0.2),
    }
    for name, want in expected.items():
        spec = LossSpec(name, beta=0.3, skew=0.2)
        assert spec.uses_teacher
        torch.testing.assert_close(spec.divergence(s, t), want)
    assert not LossSpec("sft").uses_teacher and not LossSpec("seqkd").uses_teacher


def test_config_checks_methods_against_the_registry() -> None:
    with pytest.raises(ValidationError, match="unknown method 'kl'"):
        DistillConfig(student="s", teacher="t", train="x", out="o", method="kl")
    with pytest.raises(ValidationError, match="method 'seqkd' needs a teacher"):
        DistillConfig(student="s", train="x", out="o", method="seqkd")
    with pytest.raises(ValidationError, match="topk applies to kd, jsd, tvd, skl only"):
        DistillConfig(student="s", teacher="t", train="x", out="o", method="sft", topk=4)


def test_a_third_party_method_is_one_registration(rkl_site: Path) -> None:
    assert "rkl" in methods.names() and methods.get("rkl").token_level
    cfg = DistillConfig(student="s", teacher="t", train="x", out="o", method="rkl")
    s, t = _logps()
    spec = LossSpec(cfg.method)
    torch.testing.assert_close(spec.divergence(s, t), forward_kl(s, t))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(rkl_site), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "kdeval.cli", "distill", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and "{sft,seqkd,kd,jsd,tvd,skl,gkd,rkl}" in proc.stdout, proc.stderr
    assert "rkl: reverse KL(p_S || p_T)" in " ".join(proc.stdout.split())
