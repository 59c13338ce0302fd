"""Reads Hugging Face ``datasets`` as Alpaca rows: folders written by ``save_to_disk``, local
dataset repos (a folder of data files), and datasets on the Hugging Face Hub.

Rows go through the same validation as file rows
(:func:`~dvbench.harness.data.rows.examples_from_rows`), numbered ``row 1``, ``row 2``, ….
``datasets`` is an optional extra (``pip install "dvbench[datasets]"``), imported only when a
source needs it. Nothing here touches the network unless downloads are allowed, by the
source's ``allow_download`` or by ``DVBENCH_ALLOW_DOWNLOAD=1``; folders never need it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from dvbench.harness.errors import InputError
from dvbench.harness.network import ALLOW_DOWNLOAD, downloads_allowed
from dvbench.harness.data.rows import examples_from_rows
from dvbench.harness.records import Example

SAVED = ("dataset_dict.json", "state.json")  # what save_to_disk writes: a DatasetDict, a Dataset
BATCH = 1000


class NotCached(InputError):
    """A hub dataset read offline that the local ``datasets`` cache does not hold."""


def folder_rows(folder: Path, split: str | None = None) -> tuple[str, Iterator[tuple[str, dict]]]:
    """The source name and rows of a folder: a ``save_to_disk`` folder is read with
    ``load_from_disk``, any other with ``load_dataset`` (a local repo of data files). A folder
    holding several splits needs ``split``; one holding a single split uses it. Offline always."""
    datasets = _import(str(folder))
    saved = any((folder / name).is_file() for name in SAVED)
    try:
        with _offline():
            loaded = datasets.load_from_disk(str(folder)) if saved else datasets.load_dataset(str(folder))
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        how = "load_from_disk" if saved else "load_dataset"
        raise InputError(f"{folder}: cannot be read as a Hugging Face dataset by {how} ({_reason(error)}); "
                         f"check the folder") from None
    if isinstance(loaded, datasets.Dataset):
        if split is not None and split != loaded.split:
            held = f"split {loaded.split}" if loaded.split else "no named split"
            raise InputError(f"{folder}: holds a single dataset ({held}), not split {split!r}; remove 'split'")
        return str(folder), _rows(loaded)
    names = list(loaded)
    if split is None and len(names) != 1:
        raise InputError(f"{folder}: holds splits {', '.join(names)}; choose one with 'split'")
    split = names[0] if split is None else split
    if split not in loaded:
        raise InputError(f"{folder}: no split {split!r}; splits: {', '.join(names)}")
    return f"{folder} (split {split})", _rows(loaded[split])


def load_hub_examples(
    name: str,
    *,
    split: str = "train",
    config: str | None = None,
    revision: str | None = None,
    allow_download: bool = False,
    cached_only: bool = False,
    require_output: bool = True,
) -> tuple[Example, ...]:
    """One split of a hub dataset, as examples. Without downloads (see
    :func:`downloads_allowed`; never with ``cached_only``) only the local ``datasets`` cache is
    read, at its latest cached version whatever ``revision`` says; a dataset not cached there
    raises :class:`NotCached`."""
    source = f"hub dataset {name} ({f'config {config}, ' if config else ''}split {split})"
    datasets = _import(source)
    allowed = downloads_allowed(allow_download) and not cached_only
    hint = (f"; downloads are off, so only the local datasets cache ({datasets.config.HF_DATASETS_CACHE}) "
            f"is read: set 'allow_download: true' beside 'dataset: {name}' in the spec, or {ALLOW_DOWNLOAD}=1")
    try:
        with nullcontext() if allowed else _offline():
            loaded = datasets.load_dataset(name, config, split=split, revision=revision)
    except (ConnectionError, FileNotFoundError) as error:
        if not allowed:
            raise NotCached(f"{source}: not in the local datasets cache ({_reason(error)}){hint}") from None
        raise InputError(f"{source}: not found on the hub or the hub is unreachable ({_reason(error)}); "
                         f"check the name and your connection") from None
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        raise InputError(f"{source}: cannot be loaded ({_reason(error)}); check 'split', 'config' and "
                         f"'revision'{hint if not allowed else ''}") from None
    return examples_from_rows(source, _rows(loaded), require_output=require_output)


def _rows(dataset: Any) -> Iterator[tuple[str, dict]]:
    """Rows as plain Python values (any saved format, such as numpy, is dropped), numbered from 1."""
    number = 0
    for batch in dataset.with_format(None).iter(batch_size=BATCH):
        for values in zip(*batch.values()):
            number += 1
            yield f"row {number}", dict(zip(batch, values))


def _import(source: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise InputError(f'{source}: reading Hugging Face datasets needs the datasets package; '
                         f'pip install "dvbench[datasets]"') from None
    return datasets


@contextmanager
def _offline() -> Iterator[None]:
    """Hub access off for the duration: ``datasets`` and ``huggingface_hub`` read these flags
    at each request (the environment variables are read once, at their import)."""
    import datasets.config
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _reason(error: BaseException) -> str:
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
