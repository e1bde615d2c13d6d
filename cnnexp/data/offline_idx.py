"""Preparing TFDS's MNIST-family datasets from local IDX files, without TensorFlow or a network.

The stock TFDS builders download the IDX files and encode PNGs with TensorFlow. These
subclasses keep the stock name, version and features (so `tfds.data_source` reads the result
like any prepared dataset) but read the IDX files from a local directory with numpy and encode
with Pillow. TFDS's download checksums are bypassed on purpose: Debian's gzipped copies hold the
same pixels with different gzip headers.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tensorflow_datasets.image_classification import mnist

from cnnexp.data.idx import read_idx

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Debian packages that install the IDX files (`dpkg -L <package>` lists them).
DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def _idx_path(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def has_idx_files(directory: Path) -> bool:
    """Whether `directory` holds all four IDX files (gzipped or not)."""
    return all(_idx_path(directory, stem) for pair in IDX_FILES.values() for stem in pair)


def debian_idx_dir(dataset: str) -> Path | None:
    """The directory where the Debian package for `dataset` installed its IDX files, if any."""
    package = DEBIAN_PACKAGES.get(dataset)
    if package is None or shutil.which("dpkg") is None:
        return None
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        return None
    for line in listing.stdout.splitlines():
        if line.endswith(IDX_FILES["train"][0] + ".gz"):
            directory = Path(line).parent
            return directory if has_idx_files(directory) else None
    return None


class _IdxGeneratorMixin:
    """Replaces the stock download step with reading IDX files from `self.idx_dir`."""

    idx_dir: Path

    def _split_generators(self, dl_manager):  # noqa: ARG002 (TFDS signature)
        return {split: self._examples(*stems) for split, stems in IDX_FILES.items()}

    def _examples(self, images_stem: str, labels_stem: str):
        from PIL import Image

        images = read_idx(_idx_path(self.idx_dir, images_stem))
        labels = read_idx(_idx_path(self.idx_dir, labels_stem))
        if len(images) != len(labels) or images.ndim != 3:
            raise ValueError(f"{self.idx_dir}: {images_stem} and {labels_stem} do not match")
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": Image.fromarray(image, mode="L"), "label": int(label)}


class OfflineMnist(_IdxGeneratorMixin, mnist.MNIST, skip_registration=True):
    name = "mnist"


class OfflineFashionMnist(_IdxGeneratorMixin, mnist.FashionMNIST, skip_registration=True):
    name = "fashion_mnist"


OFFLINE_BUILDERS = {"mnist": OfflineMnist, "fashion_mnist": OfflineFashionMnist}


def prepare_from_idx(dataset: str, idx_dir: Path, data_dir: Path) -> None:
    """Write TFDS `dataset` as array_record under `data_dir` from the IDX files in `idx_dir`."""
    builder = OFFLINE_BUILDERS[dataset](data_dir=str(data_dir), file_format="array_record")
    builder.idx_dir = idx_dir
    builder.download_and_prepare()
