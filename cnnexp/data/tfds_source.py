"""Any TFDS image-classification dataset by name, opened without TensorFlow.

MNIST and Fashion-MNIST are prepared offline from IDX files (`data.source_dir`, or the
Debian package's copy) when they are not prepared yet; every other name goes through TFDS's
normal download-and-prepare, which needs a network: the hosts it downloads from are probed first
(`cnnexp.data.network`), so that an offline machine fails in seconds, not after TFDS's minutes
of retries. Reading uses `tfds.data_source` (array_record files, random access, numpy out:
`cnnexp.data.records`), so TensorFlow is never imported.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from cnnexp.data.network import PROBE_TIMEOUT, connect_targets, first_reachable
from cnnexp.data.offline_idx import (
    DEBIAN_PACKAGES,
    OFFLINE_BUILDERS,
    debian_idx_dir,
    has_idx_files,
    prepare_from_idx,
)
from cnnexp.data.records import RecordSplit, record_split
from cnnexp.data.tfds_prep import prepared_once, quiet_tfds
from cnnexp.errors import UserError


def _builder(name: str, data_dir: Path):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=str(data_dir), file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.core.registered.list_imported_builders(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"TFDS has no dataset named {name!r}{hint}") from None


def _supervised_keys(name: str, info) -> tuple[str, str]:
    """The (image, label) feature names of a TFDS dataset, or a UserError."""
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise UserError(f"dataset {name!r} has no (image, label) supervised keys")
    return tuple(info.supervised_keys)


def tfds_signature(name: str, data_dir: str) -> tuple[tuple[int | None, ...], int | None]:
    """(image shape H, W, C; class count) of TFDS dataset `name`, None where the dataset does
    not fix them. Read from the builder's info: nothing is downloaded, prepared or loaded."""
    with quiet_tfds():
        info = _builder(name, Path(data_dir).expanduser()).info
    image, label = (info.features[key] for key in _supervised_keys(name, info))
    shape = tuple(image.shape)
    return (*shape, 1) if len(shape) == 2 else shape, getattr(label, "num_classes", None)


def _how_to_get(name: str, data_dir: Path) -> str:
    ways = [f"prepare it under data.data_dir (now {data_dir})"]
    if name in OFFLINE_BUILDERS:
        ways.insert(0, "point data.source_dir at a directory of its four IDX files")
    if name in DEBIAN_PACKAGES:
        ways.insert(0, f"install the Debian package {DEBIAN_PACKAGES[name]} (apt-get install)")
    return "; or ".join(ways)


def _download_urls(builder) -> list[str]:
    """The URLs TFDS downloads `builder`'s dataset from, as the dataset's checksums file lists them.
    Empty for a dataset whose files the user fetches by hand (TFDS reads them from its manual
    folder, no network needed), and for one whose URLs are known only inside its code."""
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
        return []
    return list(builder.url_infos or ())


def _check_reachable(name: str, builder, data_dir: Path) -> None:
    """A UserError in seconds when none of the hosts (or proxies) the download would connect to
    answers: offline, TFDS's own retries take minutes to fail. A dataset with no listed URLs is not
    probed, and TFDS tries as before: any host probed instead might not be the one it needs."""
    targets = connect_targets(_download_urls(builder))
    if targets and first_reachable(targets) is None:
        shown = ", ".join(f"{host}:{port}" for host, port in targets[:3])
        more = f" and {len(targets) - 3} more" if len(targets) > 3 else ""
        raise UserError(
            f"cannot download dataset {name!r}: no connection to {shown}{more} within "
            f"{PROBE_TIMEOUT:g} s (is this machine offline?); " + _how_to_get(name, data_dir)
        )


def _prepare(name: str, builder, data_dir: Path, source_dir: Path | None, download: bool) -> None:
    """Make `builder`'s dataset exist under `data_dir`: from IDX files if possible, else download."""
    if source_dir is not None:
        if name not in OFFLINE_BUILDERS:
            raise UserError(
                f"data.source_dir works for {', '.join(OFFLINE_BUILDERS)} only, not {name!r}"
            )
        if not has_idx_files(source_dir):
            raise UserError(
                f"data.source_dir={source_dir} does not hold the four IDX files "
                "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte, each optionally .gz)"
            )
        prepare_from_idx(name, source_dir, data_dir)
        return
    idx_dir = debian_idx_dir(name)
    if idx_dir is not None:
        prepare_from_idx(name, idx_dir, data_dir)
        return
    if not download:
        raise UserError(
            f"dataset {name!r} is not prepared under {data_dir} and data.download=false; "
            + _how_to_get(name, data_dir)
        )
    _check_reachable(name, builder, data_dir)
    try:
        builder.download_and_prepare()
    except Exception as error:  # network errors come in many types from many libraries
        raise UserError(
            f"could not download dataset {name!r} ({type(error).__name__}: {error}); "
            + _how_to_get(name, data_dir)
        ) from None


def open_tfds(
    name: str, data_dir: str, source_dir: str | None, download: bool = True
) -> tuple[RecordSplit, RecordSplit, tuple[str, ...]]:
    """Train and test splits (on disk, labels read) and class names of TFDS dataset `name`,
    preparing it once if needed."""
    directory = Path(data_dir).expanduser()
    source = Path(source_dir).expanduser() if source_dir else None

    def find():
        builder = _builder(name, directory)
        return builder if builder.is_prepared() else None

    builder = prepared_once(directory / f".{name}.lock", find,
                            lambda: _prepare(name, _builder(name, directory), directory, source, download))
    return open_prepared(name, str(builder.data_dir))


@functools.lru_cache(maxsize=4)
def open_prepared(name: str, dataset_dir: str) -> tuple[RecordSplit, RecordSplit, tuple[str, ...]]:
    """Train and test splits and class names of the dataset prepared in `dataset_dir` (a test split
    is the one named test, else validation). Cached per folder, so a sweep reads labels once."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(dataset_dir)
    info = builder.info
    image_key, label_key = _supervised_keys(name, info)
    splits = set(info.splits)
    test_name = next((s for s in ("test", "validation") if s in splits), None)
    if "train" not in splits or test_name is None:
        raise UserError(f"dataset {name!r} needs a train and a test (or validation) split; it has {sorted(splits)}")
    train = record_split(builder, "train", image_key, label_key)
    test = record_split(builder, test_name, image_key, label_key)
    return train, test, tuple(info.features[label_key].names)
