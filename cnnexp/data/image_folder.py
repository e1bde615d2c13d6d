"""A user's own folder of images (`data=image_folder data.root=<dir>`), prepared once into TFDS
array_record files and read like any prepared TFDS dataset, without TensorFlow.

Layouts: `<root>/<class>/**/<image>` (a stratified test split is carved when the folder is
prepared), or fixed splits `<root>/train/<class>/...` with `<root>/test/<class>/...` (or `val/`).
Class names are the folder names, sorted; hidden files and folders are left out.

Preparation is keyed by a fingerprint of the folder (relative paths, sizes, mtimes, the test
fraction where a split is carved, the format version): it names the TFDS config, so a changed
folder is prepared again into a new config and an unchanged one is only opened. The files land in
`<data_dir>/image_folder/<slug of the folder's name>_<12 hex of the fingerprint>/<version>/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps

from cnnexp.checks import check_choice, check_values, is_number
from cnnexp.data.tfds_prep import prepared_once, quiet_tfds
from cnnexp.errors import UserError

log = logging.getLogger("cnnexp.data")

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")  # matched case-insensitively
BAD_IMAGE_POLICIES = ("error", "skip")  # data.on_bad_image
TEST_FOLDERS = ("test", "val")  # the fixed test split's folder beside train/
# The carved test split orders each class's files by a hash of this seed and the file's relative
# path, so it is fixed at preparation and a file keeps its split when others are added.
SPLIT_SEED = 0
# Pillow's default level 6 makes ~8% smaller files for twice the encoding time (64x64 photo
# crops); decoding, which every run pays, is equally fast at every level.
PNG_COMPRESS_LEVEL = 1
ENCODE_CHUNK = 256  # images encoded in parallel at a time: bounded memory between pool and writer
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclasses.dataclass(frozen=True)
class _File:
    path: str  # relative to the root, POSIX separators: the example's key and how messages name it
    folder: str  # its class folder, relative to the root ("cat" or "train/cat")
    label: int
    split: str | None  # "train" or "test" from the layout; None where the test split is carved
    stat: tuple[int, int]  # (size, mtime_ns), for the fingerprint; (-1, -1) where unreadable


@dataclasses.dataclass(frozen=True)
class _Listing:
    """What the folder holds, from names and stat alone (nothing opened)."""

    root: Path
    class_names: tuple[str, ...]
    class_folders: tuple[str, ...]
    files: tuple[_File, ...]
    test_folder: str | None  # "test" or "val" where the layout fixes the splits


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything preparation writes, decided before TFDS writes anything."""

    root: Path
    class_names: tuple[str, ...]
    channels: int
    image_shape: tuple[int | None, int | None, int]  # (H, W, C); H, W None when the images' sizes differ
    splits: dict[str, list[tuple[str, int]]]  # "train"/"test" -> (path relative to root, label)
    metadata: dict


# ----------------------------------------------------------------------------- listing the folder #


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    """The image files below `class_dir` (nested folders too), hidden files and folders left out."""
    found = []
    for folder, dirs, files in os.walk(class_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, f) for f in files
                  if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def _stat(path: Path) -> tuple[int, int]:
    try:
        status = path.stat()
    except OSError:  # a broken link: listed, then skipped as undecodable with the others
        return -1, -1
    return status.st_size, status.st_mtime_ns


def _split_folders(root: Path) -> tuple[dict[str | None, Path], str | None]:
    """Where the class folders are, by split (None: the test split is carved from them), and the
    fixed test split's folder name."""
    top = {p.name: p for p in _visible_dirs(root)}
    if "train" not in top:
        return {None: root}, None
    if others := sorted(set(top) - {"train", *TEST_FOLDERS}):
        raise UserError(f"data.root={root} mixes split folders (train/) with other folders ({', '.join(others)}): "
                        "put the class folders either in <root>/ or in <root>/train/ and <root>/test/")
    tests = [name for name in TEST_FOLDERS if name in top]
    if len(tests) > 1:
        raise UserError(f"data.root={root} has both test/ and val/: keep one as the test split")
    if not tests:
        return {None: top["train"]}, None
    return {"train": top["train"], "test": top[tests[0]]}, tests[0]


def _require_images(root: Path, class_folders: tuple[str, ...], files: list[_File], what: str) -> None:
    """A UserError naming the first class folder with none of `files`."""
    filled = {f.folder for f in files}
    if empty := [folder for folder in class_folders if folder not in filled]:
        raise UserError(f"class folder {root / empty[0]} holds no {what}")


def _list_folder(root: Path) -> _Listing:
    """The classes and image files of `root`, or a UserError saying what is wrong with its layout."""
    if not root.exists():
        raise UserError(f"data.root={root} does not exist")
    if not root.is_dir():
        raise UserError(f"data.root={root} is not a directory")
    split_folders, test_folder = _split_folders(root)
    classes = {split: {d.name: _image_files(d) for d in _visible_dirs(folder)}
               for split, folder in split_folders.items()}
    if not any(paths for by_class in classes.values() for paths in by_class.values()):
        raise UserError(f"data.root={root} holds no images: put them in one sub-folder per class, "
                        f"<root>/<class>/*{', *'.join(IMAGE_EXTENSIONS)}")
    if test_folder is not None and set(classes["train"]) != set(classes["test"]):
        only_train = ", ".join(sorted(set(classes["train"]) - set(classes["test"]))) or "-"
        only_test = ", ".join(sorted(set(classes["test"]) - set(classes["train"]))) or "-"
        raise UserError(f"data.root={root}: train/ and {test_folder}/ must hold the same class folders; "
                        f"only in train/: {only_train}; only in {test_folder}/: {only_test}")
    class_names = tuple(sorted(next(iter(classes.values()))))
    if len(class_names) < 2:
        raise UserError(f"data.root={root} has one class folder ({class_names[0]}); a classifier needs at least two")
    files, class_folders = [], []
    for split, by_class in classes.items():
        for label, name in enumerate(class_names):
            folder = (split_folders[split] / name).relative_to(root).as_posix()
            class_folders.append(folder)
            files += [_File(p.relative_to(root).as_posix(), folder, label, split, _stat(p)) for p in by_class[name]]
    _require_images(root, tuple(class_folders), files, f"images ({', '.join(IMAGE_EXTENSIONS)})")
    return _Listing(root, class_names, tuple(class_folders), tuple(files), test_folder)


def _config_name(listing: _Listing, test_fraction: float) -> str:
    """`<slug of the folder's name>_<12 hex of its fingerprint>`: a TFDS config name, new whenever
    a file is added, removed, resized or touched, or the carved split's fraction changes."""
    fingerprint = json.dumps({
        "format": str(ImageFolderBuilder.VERSION),
        "test_fraction": test_fraction if listing.test_folder is None else None,
        "files": [[f.path, *f.stat] for f in listing.files],
    })
    slug = re.sub(r"[^a-z0-9]+", "_", listing.root.name.lower()).strip("_")[:40] or "images"
    return f"{slug}_{hashlib.sha256(fingerprint.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------------------ reading images #


def _read_image(path: Path) -> Image.Image:
    """The picture in `path` as 8-bit L or RGB pixels, as a viewer shows it: EXIF rotation applied,
    transparency composited on white, 16-bit grey scaled (not clipped) to 8 bits."""
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)  # a loaded copy, independent of the file
    if image.mode.startswith("I"):  # 16-bit grey PNGs open as I;16 (or I)
        pixels = np.asarray(image, dtype=np.float64) / 257
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if image.mode in TRANSPARENT_MODES or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return image.convert("L" if image.mode in ("1", "L") else "RGB")


def _inspect(path: Path) -> tuple[bool, tuple[int, int]] | str:
    """Whether the image in `path` is colour (its pixels, not its mode: grey saved as RGB is grey)
    and its size (H, W), or why it cannot be decoded."""
    try:
        image = _read_image(path)
    except Exception as error:  # Pillow raises many types for broken files (OSError, SyntaxError, ...)
        return f"{type(error).__name__}: {' '.join(str(error).split())}"
    return image.mode == "RGB" and bool(np.ptp(np.asarray(image), axis=-1).any()), (image.height, image.width)


def _png(path: Path, mode: str) -> bytes:
    try:
        image = _read_image(path).convert(mode)
    except Exception:  # it decoded a moment ago, when the folder was inspected
        raise UserError(f"{path} changed while data.root was being prepared; run again") from None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _carve_test(files: list[_File], test_fraction: float) -> dict[str, list[_File]]:
    """A stratified test split: round(test_fraction * n) of each class's n images, at least one
    where n >= 2 and never all, the first in the order of SPLIT_SEED's hash of their paths."""
    by_class = defaultdict(list)
    for f in files:
        by_class[f.label].append(f)
    splits = {"train": [], "test": []}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda f: hashlib.sha256(f"{SPLIT_SEED}/{f.path}".encode()).digest())
        count = min(max(int(test_fraction * len(members) + 0.5), 1), len(members) - 1)
        splits["test"] += members[:count]
        splits["train"] += members[count:]
    return splits


def _plan(listing: _Listing, test_fraction: float, on_bad_image: str) -> _Plan:
    """Decode every image (in parallel) to find the bad ones and the channel count, then split:
    every decision is made, and every bad-input error raised, before TFDS writes anything."""
    with ThreadPoolExecutor() as pool:
        results = list(pool.map(_inspect, [listing.root / f.path for f in listing.files]))
    good, skipped, inspected = [], [], []
    for f, result in zip(listing.files, results, strict=True):
        if not isinstance(result, str):
            good.append(f)
            inspected.append(result)
            continue
        if on_bad_image == "error":
            raise UserError(f"{listing.root / f.path} is not a decodable image ({result}); "
                            "remove it or set data.on_bad_image=skip")
        log.warning("skipping %s: not a decodable image (%s)", listing.root / f.path, result)
        skipped.append(f.path)
    _require_images(listing.root, listing.class_folders, good, "decodable images")
    if listing.test_folder is None:
        splits = _carve_test(good, test_fraction)
        if not splits["test"]:
            raise UserError(f"data.root={listing.root} has one image per class, none to test on: add images "
                            "or a test/ folder beside train/")
    else:
        splits = {split: [f for f in good if f.split == split] for split in ("train", "test")}
    return _Plan(
        root=listing.root,
        class_names=listing.class_names,
        channels=(channels := 3 if any(result[0] is True for result in inspected) else 1),
        # One size for every image (a folder of MNIST-like digits): the dataset says so, and is
        # used at that size without data.image_size.
        image_shape=(*sizes.pop(), channels) if len(sizes := {result[1] for result in inspected}) == 1
        else (None, None, channels),
        splits={split: [(f.path, f.label) for f in members] for split, members in splits.items()},
        metadata={
            "root": str(listing.root),
            "test_folder": listing.test_folder,
            "test_fraction": test_fraction if listing.test_folder is None else None,
            "skipped_images": skipped,
            "num_skipped_images": len(skipped),
        },
    )


# ---------------------------------------------------------------------------- the TFDS builder #


class ImageFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes a `_Plan` as TFDS's `image_folder`; given no plan, reads a prepared config back
    (features and metadata then come from its files)."""

    name = "image_folder"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "PNG-encoded 8-bit L or RGB images of any size; train and test splits."}

    def __init__(self, *, plan: _Plan | None = None, **kwargs):
        self._plan = plan  # before super().__init__, which computes the info
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        if self._plan is None:
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"The images of {self._plan.root}, one class per folder.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=self._plan.image_shape, encoding_format="png"),
                "label": tfds.features.ClassLabel(names=self._plan.class_names),
            }),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(self._plan.metadata),
        )

    def _split_generators(self, dl_manager):  # noqa: ARG002 (TFDS signature)
        return {split: self._generate_examples(examples) for split, examples in self._plan.splits.items()}

    def _generate_examples(self, examples: list[tuple[str, int]]) -> Iterator[tuple[str, dict]]:
        mode = "L" if self._plan.channels == 1 else "RGB"
        with ThreadPoolExecutor() as pool:
            for start in range(0, len(examples), ENCODE_CHUNK):
                chunk = examples[start:start + ENCODE_CHUNK]
                pngs = pool.map(lambda example: _png(self._plan.root / example[0], mode), chunk)
                for (path, label), png in zip(chunk, pngs, strict=True):
                    yield path, {"image": png, "label": label}


def _prepared(config: tfds.core.BuilderConfig, data_dir: Path) -> ImageFolderBuilder | None:
    """The builder of `config` under `data_dir` if it is prepared, else None."""
    with quiet_tfds():
        builder = ImageFolderBuilder(config=config, data_dir=str(data_dir), file_format="array_record")
        return builder if builder.is_prepared() else None


def _write(listing: _Listing, config: tfds.core.BuilderConfig, data_dir: Path, test_fraction: float,
           on_bad_image: str) -> None:
    """Prepare `config` (the caller holds its lock, so no one else writes there): the `incomplete.*`
    folders of killed preparations are removed, and a variant folder that is there but not
    prepared (damaged) is written again."""
    for stale in (data_dir / ImageFolderBuilder.name / config.name).glob("incomplete.*"):
        shutil.rmtree(stale)
    plan = _plan(listing, test_fraction, on_bad_image)
    log.info("preparing %d images of %s under %s", sum(map(len, plan.splits.values())), listing.root, data_dir)
    with quiet_tfds():
        builder = ImageFolderBuilder(plan=plan, config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))


# ------------------------------------------------------------------------------ the public API #


def prepare_image_folder(root: str | Path, data_dir: str | Path, *, test_fraction: float,
                         on_bad_image: str) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of the images in `root` (`as_data_source()` reads them; its info
    has the features, splits and metadata), preparing it under `data_dir` if this version of the
    folder never was. Two processes preparing the same folder at once prepare it once."""
    listing = _list_folder(Path(root).expanduser().resolve())
    data_dir = Path(data_dir).expanduser()
    config = tfds.core.BuilderConfig(name=_config_name(listing, test_fraction))
    builder = prepared_once(data_dir / ImageFolderBuilder.name / f".{config.name}.lock",
                            lambda: _prepared(config, data_dir),
                            lambda: _write(listing, config, data_dir, test_fraction, on_bad_image))
    if on_bad_image == "error" and (skipped := skipped_images(builder)):
        raise UserError(f"{listing.root / skipped[0]} is not a decodable image (skipped when data.root was "
                        "prepared with data.on_bad_image=skip); remove it or set data.on_bad_image=skip")
    return builder


def skipped_images(builder: tfds.core.DatasetBuilder) -> list[str]:
    """The files (relative to data.root) left out of a prepared folder as undecodable."""
    return list(builder.info.metadata["skipped_images"])


def image_folder_signature(root: str | Path, data_dir: str | Path, *,
                           test_fraction: float) -> tuple[tuple[int | None, int | None, int], int]:
    """((None, None, channels), class count) of the images in `root`, for `cnnexp summary`. The
    channel count needs every image decoded, so the folder is prepared (bad images skipped): the
    work is the same a run does first, and that run then only opens it."""
    info = prepare_image_folder(root, data_dir, test_fraction=test_fraction, on_bad_image="skip").info
    return tuple(info.features["image"].shape), info.features["label"].num_classes


def validate_image_folder_options(data_cfg: DictConfig) -> None:
    """data.root, data.test_fraction and data.on_bad_image checked before anything is read (whether
    the folder exists, and what it holds, only when it is read)."""
    if OmegaConf.is_missing(data_cfg, "root"):
        raise UserError("say which folder of images: data.root=<dir> (one sub-folder per class)")
    check_values([
        ("data.root", data_cfg.root, lambda v: isinstance(v, str) and v.strip() != "",
         "a folder path (one sub-folder per class)"),
        ("data.test_fraction", data_cfg.test_fraction, lambda v: is_number(v) and 0 < v < 1,
         "a number strictly between 0 and 1"),
    ])
    check_choice("data.on_bad_image", data_cfg.on_bad_image, BAD_IMAGE_POLICIES)
    if not Path(data_cfg.root).expanduser().exists():
        raise UserError(f"data.root={data_cfg.root} does not exist")
