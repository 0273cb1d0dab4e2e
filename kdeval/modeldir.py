"""Is this a model kdeval can load? Checked cheaply, before any engine starts, for every backend
that loads a checkpoint (vLLM, transformers, the trainer, the latency fixture).

A path that exists must be a Hugging Face model directory: a config.json that names a model type
transformers knows (or whose own code the user trusts), tokenizer files, and whole weights (each
safetensors file as long as its header says, every shard its index lists). A path that does not
exist is a missing directory, unless it looks like a hub id (`org/name`, and `org` is no local
folder): then the hub must answer for its config.json, or the error says what was assumed.

Each problem is one UserError line: what, which directory, how to fix.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kdeval.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: safetensors refuses headers past 100 MB; a longer "header" means the file is something else.
_MAX_HEADER = 100_000_000
_SAFE_INDEX = "model.safetensors.index.json"
_BIN_INDEX = "pytorch_model.bin.index.json"
#: Files that hold a vocabulary: fast tokenizers, sentencepiece / tiktoken models, BPE / WordPiece.
_TOKENIZER_FILES = ("tokenizer.json", "tekken.json", "vocab.json", "vocab.txt")
_TOKENIZER_SUFFIXES = (".model", ".tiktoken")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")

KnownTypes = Callable[[], Iterable[str]]


def check_model(
    name: str,
    path: str | None,
    *,
    trust_remote_code: bool = False,
    where: str | None = None,
    extra_types: KnownTypes | None = None,
    weights: bool = True,
) -> None:
    """Raise a one-line UserError unless `path` is a loadable model directory or a reachable hub id.

    `extra_types`: model types the backend runs beyond the installed transformers' (asked only
    when transformers does not know a type). `weights=False`: only the tokenizer will be loaded."""
    if not path:
        raise UserError(f"model '{name}' has no path", where=where, fix="give a checkpoint directory")
    p = Path(path).expanduser()
    if p.exists():
        check_dir(
            name,
            p,
            trust_remote_code=trust_remote_code,
            where=where,
            extra_types=extra_types,
            weights=weights,
        )
    elif looks_like_hub_id(path):
        _check_hub(name, path, trust_remote_code, where, extra_types)
    else:
        shaped = _HUB_ID.match(path) and not path.startswith((".", "/", "~"))
        org = path.split("/")[0]
        local = f" ({org}/ is a folder here, so this is a local path, not a hub id)" if shaped else ""
        raise UserError(
            f"model directory for '{name}' does not exist: {path}{local}",
            where=where,
            fix="check the path (or pass a hub id such as org/name)",
        )


def looks_like_hub_id(path: str) -> bool:
    """`org/name` that is not a local path: no leading `.`, `/` or `~`, and `org` is no folder here
    (so `checkpoints/student`, when ./checkpoints exists, is a missing directory, not a hub id)."""
    if path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        return False
    return not Path(path.split("/")[0]).is_dir()


def check_dir(
    name: str,
    p: Path,
    *,
    trust_remote_code: bool = False,
    where: str | None = None,
    extra_types: KnownTypes | None = None,
    weights: bool = True,
) -> None:
    """The checks of a local directory: config, model type and remote code, tokenizer, weights."""
    if not p.is_dir() or not (p / "config.json").is_file():
        raise UserError(
            f"model '{name}' at {p} is not a Hugging Face model directory (no config.json)",
            where=where,
            fix="pass a directory saved with save_pretrained()",
        )
    config = read_config(name, p / "config.json", where)
    check_config(name, p, config, trust_remote_code=trust_remote_code, where=where, extra_types=extra_types)
    _check_tokenizer(name, p, where)
    if weights:
        _check_weights(name, p, where)


def read_config(name: str, f: Path, where: str | None = None) -> dict[str, Any]:
    """config.json as a JSON object that names its model_type."""

    def bad(what: str) -> UserError:
        return UserError(
            f"model '{name}': {f} {what}",
            where=where,
            fix="restore config.json from the original checkpoint (or re-save it with save_pretrained())",
        )

    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise bad("is not text (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise bad(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise bad(f"is not a JSON object (it holds a {type(data).__name__})")
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise bad("names no model_type (transformers and vLLM pick the architecture by it)")
    return data


def check_config(
    name: str,
    where_dir: Path | str,
    config: dict[str, Any],
    *,
    trust_remote_code: bool = False,
    where: str | None = None,
    extra_types: KnownTypes | None = None,
) -> None:
    """A model type the installed libraries run, or the model's own code (auto_map) when trusted.

    As transformers does: with a known model type its own implementation runs even when the
    config also has an auto_map, so only a type it does not know needs the model's code."""
    model_type = str(config["model_type"])
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and auto_map and trust_remote_code:
        _check_code_files(name, where_dir, auto_map, where)
        return
    if _known(model_type, extra_types):
        return
    if isinstance(auto_map, dict) and auto_map:
        code = ", ".join(f"{k} → {v}" for k, v in list(auto_map.items())[:2])
        raise UserError(
            f"model '{name}' at {where_dir} runs its own code (config.json auto_map: {code}), "
            "which kdeval does not run unless asked",
            where=where,
            fix="pass --trust-remote-code (trust_remote_code: true) if you trust that code",
        )
    import transformers

    raise UserError(
        f"model '{name}' at {where_dir} has model_type '{model_type}', "
        f"which transformers {transformers.__version__} does not know",
        where=where,
        fix="upgrade transformers (pip install -U transformers), or fix model_type in config.json",
    )


def _known(model_type: str, extra_types: KnownTypes | None) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type in CONFIG_MAPPING_NAMES:
        return True
    return extra_types is not None and model_type in set(extra_types())


def _check_code_files(name: str, where_dir: Path | str, auto_map: dict[str, Any], where: str | None) -> None:
    """Trusted code must be there: each auto_map module (unless it lives in another hub repo)."""
    if not isinstance(where_dir, Path):
        return  # a hub model: its code is downloaded with it
    for ref in auto_map.values():
        for target in ref if isinstance(ref, list) else [ref]:
            if not isinstance(target, str) or "--" in target or "." not in target:
                continue
            module = target.rsplit(".", 1)[0].replace(".", "/") + ".py"
            if not (where_dir / module).is_file():
                raise UserError(
                    f"model '{name}': config.json auto_map names {target}, but {where_dir / module} "
                    "does not exist",
                    where=where,
                    fix="copy the model's .py files into the directory",
                )


def _check_tokenizer(name: str, p: Path, where: str | None) -> None:
    files = [f.name for f in p.iterdir() if f.is_file()]
    if any(f in _TOKENIZER_FILES or f.endswith(_TOKENIZER_SUFFIXES) for f in files):
        return
    raise UserError(
        f"model '{name}' at {p} has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...)",
        where=where,
        fix="save the tokenizer into it: tokenizer.save_pretrained(DIR)",
    )


# -- weights ----------------------------------------------------------------------------------------


def _check_weights(name: str, p: Path, where: str | None) -> None:
    """Every shard an index lists is there; each safetensors file is as long as its header says."""

    def error(what: str, fix: str = "copy (or download) the checkpoint again") -> UserError:
        return UserError(f"model '{name}': {what}", where=where, fix=fix)

    for index_name in (_SAFE_INDEX, _BIN_INDEX):
        index = p / index_name
        if not index.is_file():
            continue
        weight_map = _weight_map(index)
        if weight_map is None:
            raise error(f"{index} is not a valid index (no weight_map object)")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (p / s).is_file()]
        if missing:
            more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
            raise error(
                f"{len(missing)} of the {len(shards)} weight shards that {index} lists are missing "
                f"from {p} ({', '.join(missing[:2])}{more})"
            )
        for shard in shards:
            tensors = _check_weight_file(p / shard, error)
            if tensors is not None:
                absent = sorted(t for t, s in weight_map.items() if s == shard and t not in tensors)
                if absent:
                    raise error(
                        f"{p / shard} lacks {len(absent)} tensors that {index} puts there ({absent[0]}, ...)"
                    )
        return
    weights = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    if not weights:
        raise error(
            f"{p} holds no weight files (*.safetensors, *.bin)", "save the model with save_pretrained()"
        )
    for f in weights:
        _check_weight_file(f, error)


def _weight_map(index: Path) -> dict[str, str] | None:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
        return None
    return wm


def _check_weight_file(f: Path, error: Callable[[str], UserError]) -> set[str] | None:
    """The tensor names of a safetensors file (None for other formats), after checking its length."""
    if f.suffix == ".safetensors":
        tensors, problem = safetensors_problem(f)
        if problem:
            raise error(f"{f} {problem}")
        return tensors
    if f.suffix == ".bin":  # torch.save's zip format ends with its directory: a cut file has none
        with f.open("rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
        if zipped and not zipfile.is_zipfile(f):
            raise error(f"{f} is cut short (its zip directory is missing)")
    return None


def safetensors_problem(f: Path) -> tuple[set[str], str | None]:
    """(tensor names, what is wrong or None). The header gives each tensor's byte range, so a
    file shorter than the largest end is truncated.

    >>> import struct, tempfile, pathlib
    >>> head = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> _ = f.write_bytes(struct.pack("<Q", len(head)) + head + bytes(8))
    >>> safetensors_problem(f)
    ({'w'}, None)
    >>> _ = f.write_bytes(struct.pack("<Q", len(head)) + head + bytes(5))
    >>> safetensors_problem(f)[1]
    'is cut short: 67 of 70 bytes (an interrupted copy or download?)'
    """
    size = f.stat().st_size
    with f.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return set(), f"is cut short: {size} bytes, not even the header's length"
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER:
            return set(), "is not a safetensors file (no valid header)"
        if 8 + n > size:
            return set(), f"is cut short: {size:,} bytes, but its header alone takes {8 + n:,}"
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return set(), "has a corrupt header (not JSON)"
    if not isinstance(header, dict):
        return set(), "has a corrupt header (not a JSON object)"
    tensors = {k for k in header if k != "__metadata__"}
    ends = []
    for k in tensors:
        offsets = header[k].get("data_offsets") if isinstance(header[k], dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(x, int) for x in offsets)):
            return tensors, f"has a corrupt header (tensor '{k}' has no data_offsets)"
        ends.append(offsets[1])
    need = 8 + n + max(ends, default=0)
    if size < need:
        return tensors, f"is cut short: {size:,} of {need:,} bytes (an interrupted copy or download?)"
    return tensors, None


# -- hub ids ----------------------------------------------------------------------------------------


def _check_hub(
    name: str, repo: str, trust_remote_code: bool, where: str | None, extra_types: KnownTypes | None
) -> None:
    """A hub id must answer for its config.json (from the cache, or the hub); its config is checked."""
    assumed = f"model '{name}': '{repo}' is not a local directory, so it was taken as a Hugging Face hub id"
    fix = "pass an existing directory"
    try:
        config_file = _hub_config(repo)
    except _HubMissing as exc:
        raise UserError(f"{assumed}, and the hub has no such model: {exc}", where=where, fix=fix) from None
    except _HubUnreachable as exc:
        raise UserError(f"{assumed}, and the hub could not be reached: {exc}", where=where, fix=fix) from None
    config = read_config(name, Path(config_file), where)
    check_config(
        name, repo, config, trust_remote_code=trust_remote_code, where=where, extra_types=extra_types
    )


class _HubMissing(Exception):
    pass


class _HubUnreachable(Exception):
    pass


def _hub_config(repo: str) -> str:
    """The path of the repo's config.json: cached, else downloaded (one try, no retries: a
    machine without network must fail in a second, not after a minute of back-off)."""
    from huggingface_hub import constants, errors, get_hf_file_metadata, hf_hub_download, hf_hub_url

    no_file = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)

    cached = _cached(repo)
    if cached:
        return cached
    if constants.HF_HUB_OFFLINE:
        raise _HubUnreachable("offline mode (HF_HUB_OFFLINE) and its config.json is not in the cache")
    try:
        get_hf_file_metadata(hf_hub_url(repo, "config.json"), retry_on_errors=False)
        return str(hf_hub_download(repo, "config.json"))
    except errors.LocalEntryNotFoundError as exc:  # the download lost the connection
        raise _HubUnreachable(_first_line(exc)) from None
    except errors.GatedRepoError as exc:
        raise _HubMissing(f"it is gated and this machine has no access ({_first_line(exc)})") from None
    except errors.RepositoryNotFoundError:
        raise _HubMissing("no repository of that name (or it is private)") from None
    except no_file:
        raise _HubMissing("the repository has no config.json") from None
    except Exception as exc:  # connection refused, DNS, timeouts, proxies: each library its own type
        raise _HubUnreachable(_first_line(exc)) from None


def _cached(repo: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, "config.json")
    return found if isinstance(found, str) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
