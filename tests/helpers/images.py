"""Folders of images the tests make: the bundled digits as PNG files, and a folder of mixed sizes,
modes and formats with one broken file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnexp.data.digits import load_digits_splits


def write_digits_folder(root: Path, train_count: int | None = None, test_count: int | None = None) -> Path:
    """The digits' fixed train and test splits (the first `*_count` images of each, all by
    default) as `root/{train,test}/<digit>/<n>.png`; returns `root`."""
    train, test, names = load_digits_splits()
    for split, data, count in (("train", train, train_count), ("test", test, test_count)):
        for index, (image, label) in enumerate(zip(data.images[:count], data.labels[:count], strict=True)):
            folder = root / split / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[..., 0]).save(folder / f"{index}.png")
    return root


def write_mixed_folder(root: Path, per_class: int = 30) -> Path:
    """Three classes of colour-coded images of sizes 12..60 px, as PNG, JPEG and grey BMP, plus a
    file that is not an image (`red/broken.jpg`); returns `root`."""
    rng = np.random.default_rng(0)
    for channel, name in enumerate(("red", "green", "blue")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = rng.integers(12, 60, 2)
            pixels = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
            pixels[..., channel] += 150
            picture = Image.fromarray(pixels)
            suffix = ("png", "jpg", "bmp")[index % 3]
            (picture.convert("L") if suffix == "bmp" else picture).save(folder / f"{index}.{suffix}")
    (root / "red" / "broken.jpg").write_bytes(b"not an image at all")
    return root
