"""data=image_folder: a folder of the user's images prepared once into TFDS array_record files.

Every folder is built in tmp_path with Pillow; each image of a folder has its own size, so an
example read back names the file it came from."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.configs import compose_with_hydra
from helpers.paths import CONF
from omegaconf import OmegaConf
from PIL import Image

import cnnexp.data.image_folder as image_folder
from cnnexp.data.image_folder import (
    image_folder_signature,
    prepare_image_folder,
    skipped_images,
    validate_image_folder_options,
)
from cnnexp.errors import UserError


def _pixels(size: tuple[int, int], mode: str, seed: int = 0) -> Image.Image:
    """A random `mode` image of `size` (height, width)."""
    rng = np.random.default_rng(seed)
    height, width = size
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 4, (height, width), dtype=np.uint8), mode="P")
        image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 40, 80, 120])
        return image
    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if bands == 1 else array)


def _save(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _class_folder(root: Path, counts: dict[str, int], mode: str = "RGB", first: int = 0) -> dict[tuple[int, int], Path]:
    """`counts[c]` PNGs in `root/c/`, the i-th (from `first`) of size (5 + i % 31, 7 + i // 31):
    size -> file."""
    files = {}
    for name, count in counts.items():
        for _ in range(count):
            index = first + len(files)
            size = (5 + index % 31, 7 + index // 31)
            files[size] = _save(root / name / f"{index}.png", _pixels(size, mode, seed=index))
    return files


def _examples(builder, split: str) -> list[dict]:
    source = builder.as_data_source()[split]
    return [source[i] for i in range(len(source))]


def _sizes(builder, split: str) -> list[tuple[int, int]]:
    return sorted(example["image"].shape[:2] for example in _examples(builder, split))


def _config_dirs(data_dir: Path) -> list[Path]:
    """The config folders under `data_dir` (each folder version prepared, or being prepared)."""
    return [p for p in (data_dir / "image_folder").iterdir() if p.is_dir()]


def _prepare(root: Path, data_dir: Path, test_fraction: float = 0.2, on_bad_image: str = "skip"):
    return prepare_image_folder(root, data_dir, test_fraction=test_fraction, on_bad_image=on_bad_image)


# ----------------------------------------------------------------------- what is prepared #


def test_mixed_sizes_modes_formats_and_nesting_are_read_back_with_their_labels(tmp_path):
    root = tmp_path / "My Pets"
    files = {  # path -> (height, width), mode
        "cat/a.png": ((5, 7), "RGB"),
        "cat/b.PNG": ((12, 9), "RGBA"),
        "cat/nested/deeper/c.jpg": ((40, 33), "L"),
        "cat/d.bmp": ((20, 11), "P"),
        "dog/e.webp": ((17, 23), "RGB"),
        "dog/f.JPEG": ((8, 30), "RGB"),
        "dog/g.png": ((31, 6), "P"),
        "dog/sub/h.bmp": ((9, 14), "L"),
        "ant/i.jpeg": ((26, 19), "L"),
        "ant/j.png": ((13, 40), "RGBA"),
    }
    for index, (path, (size, mode)) in enumerate(files.items()):
        _save(root / path, _pixels(size, mode, seed=index))
    # Left out: hidden files and folders, files that are not images, images outside class folders.
    _save(root / "cat" / ".hidden.png", _pixels((3, 3), "RGB"))
    _save(root / "cat" / ".cache" / "x.png", _pixels((3, 4), "RGB"))
    _save(root / ".thumbnails" / "y.png", _pixels((4, 3), "RGB"))
    _save(root / "stray.png", _pixels((4, 4), "RGB"))
    (root / "dog" / "notes.txt").write_text("not an image")

    builder = _prepare(root, tmp_path / "tfds")

    info = builder.info
    assert info.features["image"].shape == (None, None, 3) and info.supervised_keys == ("image", "label")
    assert info.features["label"].names == ["ant", "cat", "dog"]
    assert {name: split.num_examples for name, split in info.splits.items()} == {"train": 7, "test": 3}
    assert skipped_images(builder) == [] and info.metadata["root"] == str(root.resolve())
    assert builder.data_dir.startswith(str(tmp_path / "tfds" / "image_folder" / "my_pets_"))
    label_of = {size: info.features["label"].str2int(path.split("/")[0]) for path, (size, _) in files.items()}
    seen = []
    for split in ("train", "test"):
        for example in _examples(builder, split):
            assert example["image"].dtype == np.uint8 and example["image"].shape[2] == 3
            seen.append(example["image"].shape[:2])
            assert example["label"] == label_of[seen[-1]]
    assert sorted(seen) == sorted(label_of)


def test_png_pixels_round_trip_exactly_in_colour_and_grey(tmp_path):
    for mode, channels in (("RGB", 3), ("L", 1)):
        root = tmp_path / mode
        files = _class_folder(root, {"a": 3, "b": 3}, mode)
        builder = _prepare(root, tmp_path / "tfds")
        assert builder.info.features["image"].shape == (None, None, channels)
        for split in ("train", "test"):
            for example in _examples(builder, split):
                original = np.asarray(Image.open(files[example["image"].shape[:2]]))
                np.testing.assert_array_equal(example["image"], original.reshape(example["image"].shape))


def test_transparency_palettes_and_16_bit_grey_are_converted_as_a_viewer_shows_them(tmp_path):
    root = tmp_path / "images"
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, :, 3] = 255  # the first row opaque, the rest fully transparent
    _save(root / "a" / "rgba.png", Image.fromarray(rgba))
    palette = _pixels((6, 6), "P")
    _save(root / "a" / "palette.png", palette)
    grey16 = np.array([[0, 771, 65535, 32896]] * 7, np.uint16)
    _save(root / "b" / "grey16.png", Image.fromarray(grey16))
    _save(root / "b" / "grey.png", _pixels((8, 8), "L"))

    by_size = {example["image"].shape[:2]: example["image"] for split in ("train", "test")
               for example in _examples(_prepare(root, tmp_path / "tfds"), split)}

    assert (by_size[5, 5][0] == (10, 20, 30)).all() and (by_size[5, 5][1:] == 255).all()  # on white
    np.testing.assert_array_equal(by_size[6, 6], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(by_size[7, 4][..., 0], np.array([[0, 3, 255, 128]] * 7))
    assert (by_size[7, 4] == by_size[7, 4][..., :1]).all()  # grey in all three channels


def test_grey_only_folder_has_one_channel_even_when_saved_as_rgb_or_16_bit(tmp_path):
    root = tmp_path / "scans"
    grey = np.asarray(_pixels((9, 9), "L"))
    _save(root / "a" / "rgb_but_grey.png", Image.fromarray(np.stack([grey] * 3, axis=-1)))
    _save(root / "a" / "grey_alpha.png", _pixels((10, 10), "L").convert("LA"))
    _save(root / "b" / "grey16.png", Image.fromarray(np.full((11, 11), 4000, np.uint16)))
    _save(root / "b" / "grey.jpg", _pixels((12, 12), "L"))

    builder = _prepare(root, tmp_path / "tfds")

    assert builder.info.features["image"].shape == (None, None, 1)
    images = {e["image"].shape[:2]: e["image"] for s in ("train", "test") for e in _examples(builder, s)}
    np.testing.assert_array_equal(images[9, 9][..., 0], grey)
    assert {image.shape[2] for image in images.values()} == {1}
    assert image_folder_signature(root, tmp_path / "tfds", test_fraction=0.2) == ((None, None, 1), 2)


# ----------------------------------------------------------------------------- bad images #


def test_a_corrupt_file_is_skipped_with_a_warning_and_counted_in_the_info(tmp_path, caplog):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    (root / "a" / "broken.jpg").write_bytes(np.random.default_rng(0).bytes(300))

    with caplog.at_level(logging.WARNING, logger="cnnexp.data"):
        builder = _prepare(root, tmp_path / "tfds")

    (warning,) = [record.getMessage() for record in caplog.records if record.name == "cnnexp.data"]
    assert str(root / "a" / "broken.jpg") in warning
    assert sum(split.num_examples for split in builder.info.splits.values()) == 6
    reopened = _prepare(root, tmp_path / "tfds")  # the count is in the prepared files, not in memory
    assert skipped_images(reopened) == ["a/broken.jpg"] and reopened.info.metadata["num_skipped_images"] == 1


def test_on_bad_image_error_names_the_file_and_prepares_nothing(tmp_path):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    (root / "b" / "truncated.png").write_bytes((root / "b" / "5.png").read_bytes()[:60])

    with pytest.raises(UserError, match=r"images/b/truncated.png is not a decodable image .*data.on_bad_image=skip"):
        _prepare(root, tmp_path / "tfds", on_bad_image="error")
    assert not list((tmp_path / "tfds" / "image_folder").glob("*/1.0.0"))
    # Prepared while skipping, the folder still fails a run that asks for no bad images.
    _prepare(root, tmp_path / "tfds")
    with pytest.raises(UserError, match=r"images/b/truncated.png is not a decodable image \(skipped when"):
        _prepare(root, tmp_path / "tfds", on_bad_image="error")


def test_a_file_that_changes_while_it_is_written_stops_the_preparation_cleanly(tmp_path, monkeypatch):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    plan = image_folder._plan

    def plan_then_break_a_file(*args):
        decided = plan(*args)
        (root / "a" / "0.png").write_bytes(b"no longer an image")
        return decided

    monkeypatch.setattr(image_folder, "_plan", plan_then_break_a_file)
    with pytest.raises(UserError, match=r"images/a/0.png changed while data.root was being prepared"):
        _prepare(root, tmp_path / "tfds")
    (config_dir,) = _config_dirs(tmp_path / "tfds")
    assert list(config_dir.iterdir()) == []  # TFDS removed its incomplete folder
    monkeypatch.undo()
    assert skipped_images(_prepare(root, tmp_path / "tfds")) == ["a/0.png"]  # a new fingerprint, prepared


# ------------------------------------------------------------------------------- layouts #


@pytest.mark.parametrize("test_folder", ["test", "val"])
def test_fixed_splits_come_from_train_and_test_or_val_folders(tmp_path, test_folder):
    root = tmp_path / "images"
    train = _class_folder(root / "train", {"a": 4, "b": 2})
    test = _class_folder(root / test_folder, {"a": 1, "b": 2}, first=len(train))

    builder = _prepare(root, tmp_path / "tfds", test_fraction=0.5)

    assert _sizes(builder, "train") == sorted(train) and _sizes(builder, "test") == sorted(test)
    assert builder.info.metadata["test_folder"] == test_folder and builder.info.metadata["test_fraction"] is None
    # The fraction only shapes a carved split: changing it does not prepare a fixed one again.
    assert _prepare(root, tmp_path / "tfds", test_fraction=0.3).data_dir == builder.data_dir


def test_train_folder_alone_has_its_test_split_carved(tmp_path):
    root = tmp_path / "images"
    _class_folder(root / "train", {"a": 5, "b": 5})
    builder = _prepare(root, tmp_path / "tfds")
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {"train": 8, "test": 2}
    assert builder.info.features["label"].names == ["a", "b"]


def test_stratified_split_proportions_are_per_class_and_deterministic(tmp_path):
    root = tmp_path / "images"
    files = _class_folder(root, {"a": 10, "b": 5, "c": 2, "d": 1})

    def test_counts(builder):
        labels = [example["label"] for example in _examples(builder, "test")]
        return np.bincount(labels, minlength=4).tolist()

    first = _prepare(root, tmp_path / "tfds")
    assert test_counts(first) == [2, 1, 1, 0]  # at least one per class with two images; never all
    assert test_counts(_prepare(root, tmp_path / "tfds", test_fraction=0.5)) == [5, 3, 1, 0]
    # The same files land in the test split whenever and wherever the folder is prepared: a copy
    # (mtimes kept) in another place, into another data_dir.
    copy = shutil.copytree(root, tmp_path / "elsewhere" / "images")
    again = _prepare(copy, tmp_path / "other-tfds")
    assert Path(again.data_dir).parent.name == Path(first.data_dir).parent.name
    assert _sizes(again, "test") == _sizes(first, "test") and len(_sizes(first, "train")) == len(files) - 4


# ------------------------------------------------------------------ prepared once, per version #


def test_unchanged_folder_is_opened_not_prepared_again(tmp_path, monkeypatch):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    first = _prepare(root, tmp_path / "tfds")
    written = {p: p.stat().st_mtime_ns for p in Path(first.data_dir).iterdir()}

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(image_folder, "_read_image", no_decoding)
    again = _prepare(root, tmp_path / "tfds")
    assert again.data_dir == first.data_dir and again.is_prepared()
    assert {p: p.stat().st_mtime_ns for p in Path(again.data_dir).iterdir()} == written
    assert len(_examples(again, "train")) == 4


def test_adding_a_file_or_touching_one_prepares_a_new_version(tmp_path):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    data_dir = tmp_path / "tfds"
    names = [Path(_prepare(root, data_dir).data_dir).parent.name]
    _save(root / "a" / "new.png", _pixels((30, 30), "RGB"))
    names.append(Path(_prepare(root, data_dir).data_dir).parent.name)
    stat = (root / "b" / "3.png").stat()
    os.utime(root / "b" / "3.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    builder = _prepare(root, data_dir)
    names.append(Path(builder.data_dir).parent.name)

    assert len(set(names)) == 3 and all(name.startswith("images_") and len(name) == 19 for name in names)
    assert sum(split.num_examples for split in builder.info.splits.values()) == 7


def test_a_damaged_prepared_folder_is_prepared_again(tmp_path):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    first = _prepare(root, tmp_path / "tfds")
    (Path(first.data_dir) / "dataset_info.json").unlink()
    again = _prepare(root, tmp_path / "tfds")
    assert again.data_dir == first.data_dir and len(_examples(again, "test")) == 2


def test_two_preparations_at_once_prepare_the_folder_once(tmp_path, monkeypatch):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    plan, plans, started = image_folder._plan, [], threading.Event()

    def slow_plan(*args):
        plans.append(args)
        started.set()
        time.sleep(0.5)  # the other preparation arrives meanwhile and waits on the lock
        return plan(*args)

    monkeypatch.setattr(image_folder, "_plan", slow_plan)
    builders = []
    threads = [threading.Thread(target=lambda: builders.append(_prepare(root, tmp_path / "tfds"))) for _ in range(2)]
    threads[0].start()
    assert started.wait(30)
    threads[1].start()
    for thread in threads:
        thread.join(60)

    assert len(plans) == 1 and len(builders) == 2 and builders[0].data_dir == builders[1].data_dir


def test_a_killed_preparation_is_not_read_as_prepared_and_is_cleaned_up(tmp_path):
    root = tmp_path / "images"
    _class_folder(root, {"a": 3, "b": 3})
    data_dir, writing = tmp_path / "tfds", tmp_path / "writing"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        import cnnexp.data.image_folder as image_folder

        def hang(path, mode):
            Path({str(writing)!r}).touch()
            time.sleep(600)

        image_folder._png = hang
        image_folder.prepare_image_folder({str(root)!r}, {str(data_dir)!r}, test_fraction=0.2, on_bad_image="skip")
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not writing.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writing.exists(), "the preparation never started writing"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    (config_dir,) = _config_dirs(data_dir)
    assert [p.name.startswith("incomplete.") for p in config_dir.iterdir()] == [True]

    builder = _prepare(root, data_dir)

    assert [p.name for p in config_dir.iterdir()] == ["1.0.0"] and builder.is_prepared()
    assert len(_examples(builder, "train")) + len(_examples(builder, "test")) == 6


# ------------------------------------------------------------------------- one-line errors #


def _write_layout(root: Path, layout: str) -> None:
    if layout == "not a directory":
        root.write_text("a file")
    elif layout == "no images":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        _save(root / "stray.png", _pixels((4, 4), "RGB"))
        (root / "a" / "notes.txt").write_text("text")
    elif layout == "empty class":
        _class_folder(root, {"a": 2})
        (root / "b" / ".hidden").mkdir(parents=True)
    elif layout == "no decodable images":
        _class_folder(root, {"a": 2})
        (root / "b").mkdir()
        (root / "b" / "x.jpg").write_bytes(b"\0" * 50)
    elif layout == "one image per class":
        _class_folder(root, {"a": 1, "b": 1, "c": 1})
    elif layout == "one class":
        _class_folder(root, {"a": 3})
    elif layout == "mismatched splits":
        _class_folder(root / "train", {"a": 2, "b": 2, "c": 1})
        _class_folder(root / "test", {"a": 1, "b": 1, "d": 1})
    elif layout == "test and val":
        for split in ("train", "test", "val"):
            _class_folder(root / split, {"a": 1, "b": 1})
    elif layout == "splits and classes":
        _class_folder(root / "train", {"a": 1, "b": 1})
        _class_folder(root, {"cat": 1})


@pytest.mark.parametrize(("layout", "message"), [
    ("missing", r"data.root=.*/images does not exist"),
    ("not a directory", r"data.root=.*/images is not a directory"),
    ("no images", r"data.root=.*/images holds no images: put them in one sub-folder per class"),
    ("empty class", r"class folder .*/images/b holds no images \(.bmp, .jpeg"),
    ("no decodable images", r"class folder .*/images/b holds no decodable images"),
    ("one image per class", r"data.root=.*/images has one image per class, none to test on"),
    ("one class", r"has one class folder \(a\); a classifier needs at least two"),
    ("mismatched splits", r"train/ and test/ must hold the same class folders; only in train/: c; only in test/: d"),
    ("test and val", r"has both test/ and val/"),
    ("splits and classes", r"mixes split folders \(train/\) with other folders \(cat\)"),
])
def test_bad_layouts_are_one_line_errors(tmp_path, layout, message):
    root = tmp_path / "images"
    _write_layout(root, layout)
    with pytest.raises(UserError, match=message) as raised:
        _prepare(root, tmp_path / "tfds")
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------- the config #


def _data_config(*overrides: str):
    return compose_with_hydra(["data=image_folder", *overrides]).data


def test_config_composes_and_its_options_are_checked_before_anything_is_read(tmp_path):
    validate_image_folder_options(_data_config(f"data.root={tmp_path}"))  # what it holds is checked on reading
    with pytest.raises(UserError, match=r"data.root=/nowhere/yet does not exist"):
        validate_image_folder_options(_data_config("data.root=/nowhere/yet"))
    with pytest.raises(UserError, match=r"data.root=<dir>"):
        validate_image_folder_options(_data_config())


@pytest.mark.parametrize(("override", "message"), [
    ("data.root=null", r"invalid data.root=None: must be a folder path"),
    ("data.root=3", r"invalid data.root=3"),
    ("data.test_fraction=1.0", r"invalid data.test_fraction=1.0: must be a number strictly between 0 and 1"),
    ("data.test_fraction=true", r"invalid data.test_fraction=True"),
    ("data.on_bad_image=ignore", r"invalid data.on_bad_image='ignore': choose one of error, skip"),
])
def test_invalid_options_are_one_line_errors(override, message):
    cfg = _data_config("data.root=/some/dir", override)
    with pytest.raises(UserError, match=message):
        validate_image_folder_options(cfg)


def test_config_has_every_training_key_the_tfds_config_has():
    tfds_keys = set(OmegaConf.load(CONF / "data" / "tfds.yaml")) - {"source_dir", "download"}
    assert tfds_keys <= set(OmegaConf.load(CONF / "data" / "image_folder.yaml"))
