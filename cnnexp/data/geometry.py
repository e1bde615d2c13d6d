"""`data.image_size`, `data.channels`, `data.resize`: every image at one size and channel count.

The work is split in two so that both data paths (in memory and streamed) see the same pixels:
- on the host, once per image and deterministic: decode, convert channels, and resize to the
  *stored* size (`stored_shape`);
- on the device, inside the jitted steps: the random part. With `resize=crop` the stored image
  is larger than the model's input and training takes a random window of it (a function of the
  seed, the step and the position in the batch), evaluation the centre window: the ImageNet
  convention of resizing the shorter side to 256 and cropping 224 (ratio `CROP_RATIO`).

Modes:
- `crop`: shorter side to H / CROP_RATIO (keeping the aspect ratio), centre part of that size
  stored; random H x W window for training, centre window for evaluation.
- `pad`: the whole image scaled to fit inside H x W (aspect ratio kept), black borders around it.
- `stretch`: scaled to exactly H x W, the aspect ratio changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_choice, check_values, is_positive_int
from cnnexp.errors import UserError

RESIZE_MODES = {"crop": "random window for training, centre window for evaluation",
                "pad": "fit inside, black borders", "stretch": "exact size, aspect ratio changed"}
CHANNELS = (1, 3)
# Stored size = image size / CROP_RATIO in `crop` mode: 224 / 256, the ImageNet training convention.
CROP_RATIO = 0.875
# Folded into the seed's key, apart from the epoch shuffle and augmentation streams.
_CROP_STREAM = 1 << 29

View = Callable[[jax.Array, jax.Array], jax.Array]  # (key, NHWC pixels) -> NHWC pixels of the model's size


@dataclass(frozen=True)
class Geometry:
    """The size (H, W) and channel count images are brought to, and how; None keeps the dataset's own."""

    image_size: tuple[int, int] | None = None
    channels: int | None = None
    resize: str = "crop"

    @classmethod
    def of(cls, data_cfg: DictConfig) -> Geometry:
        size = data_cfg.get("image_size")
        return cls(None if size is None else (int(size[0]), int(size[1])), data_cfg.get("channels"),
                   data_cfg.get("resize", "crop"))

    @property
    def changes_images(self) -> bool:
        return self.image_size is not None or self.channels is not None

    def model_shape(self, native: tuple[int | None, int | None, int]) -> tuple[int, int, int]:
        """The model's input (H, W, C) for a dataset whose images are `native` (None: varies)."""
        height, width = self.image_size if self.image_size is not None else native[:2]
        channels = self.channels or native[2]
        if height is None or width is None:
            raise UserError("this dataset's images differ in size: set data.image_size=[H,W] "
                            "(e.g. data.image_size=[64,64]) to bring them to one")
        return int(height), int(width), int(channels)

    def stored_shape(self, native: tuple[int | None, int | None, int]) -> tuple[int, int, int]:
        """The (H, W, C) images are kept at on the host and on the device, before the device's view."""
        height, width, channels = self.model_shape(native)
        if self.image_size is not None and self.resize == "crop":
            height, width = round(height / CROP_RATIO), round(width / CROP_RATIO)
        return height, width, channels

    def to_stored(self, image: np.ndarray) -> np.ndarray:
        """One decoded HWC (or HW) uint8 image at the stored size and channel count (host side)."""
        image = image if image.ndim == 3 else image[..., None]
        if self.channels is not None and image.shape[-1] != self.channels:
            image = (np.repeat(image, 3, axis=-1) if self.channels == 3
                     else np.round(image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])).astype(np.uint8)[..., None])
        if self.image_size is None:
            return image
        target = self.stored_shape(image.shape)[:2]
        return _resized(image, target, self.resize)

    def stored_images(self, images: np.ndarray) -> np.ndarray:
        """`to_stored` over a stack of images (a dataset already in memory)."""
        return np.stack([self.to_stored(image) for image in images])

    def views(self) -> tuple[View | None, View | None]:
        """(training view, evaluation view) the jitted steps apply to stored pixels; None where the
        stored image is the model's input already."""
        if self.image_size is None or self.resize != "crop":
            return None, None
        size = self.image_size
        return (lambda key, pixels: random_crop(key, pixels, size)), (lambda _, pixels: center_crop(pixels, size))


def _resized(image: np.ndarray, target: tuple[int, int], mode: str) -> np.ndarray:
    """`image` brought to `target` (H, W) by `mode`, with Pillow's antialiasing bicubic filter."""
    from PIL import Image

    height, width = image.shape[:2]
    target_h, target_w = target
    if mode == "stretch":
        scaled_h, scaled_w = target_h, target_w
    else:
        scale = (max if mode == "crop" else min)(target_h / height, target_w / width)
        scaled_h, scaled_w = max(1, round(height * scale)), max(1, round(width * scale))
    channels = image.shape[-1]
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
    scaled = np.asarray(picture.resize((scaled_w, scaled_h), Image.Resampling.BICUBIC, reducing_gap=3.0))
    scaled = scaled.reshape(scaled_h, scaled_w, channels)
    if mode == "crop":  # centre part of the target size
        top, left = (scaled_h - target_h) // 2, (scaled_w - target_w) // 2
        return np.ascontiguousarray(scaled[top:top + target_h, left:left + target_w])
    if mode == "pad":
        out = np.zeros((target_h, target_w, channels), np.uint8)
        top, left = (target_h - scaled_h) // 2, (target_w - scaled_w) // 2
        out[top:top + scaled_h, left:left + scaled_w] = scaled
        return out
    return scaled


def crop_key(seed: int, step: jax.Array) -> jax.Array:
    """The key of training step `step`'s crop windows: a function of (seed, step) only."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _CROP_STREAM), step)


def random_crop(key: jax.Array, pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    """A random `size` window of each NHWC image, each with its own offset."""
    height, width = pixels.shape[1:3]
    rows = jax.random.randint(jax.random.fold_in(key, 0), (pixels.shape[0],), 0, height - size[0] + 1)
    cols = jax.random.randint(jax.random.fold_in(key, 1), (pixels.shape[0],), 0, width - size[1] + 1)
    window = (size[0], size[1], pixels.shape[3])
    return jax.vmap(lambda image, row, col: jax.lax.dynamic_slice(image, (row, col, 0), window))(pixels, rows, cols)


def center_crop(pixels: jax.Array | np.ndarray, size: tuple[int, int]) -> jax.Array | np.ndarray:
    """The centre `size` window of NHWC images, on the device or the host (slicing only; the
    images themselves when they are that size)."""
    top, left = (pixels.shape[1] - size[0]) // 2, (pixels.shape[2] - size[1]) // 2
    return pixels[:, top:top + size[0], left:left + size[1]]


def validate_geometry_options(data_cfg: DictConfig) -> None:
    """data.image_size, data.channels and data.resize, checked before anything is loaded."""
    size = data_cfg.get("image_size")
    if size is not None and not (OmegaConf.is_list(size) and len(size) == 2 and all(is_positive_int(v) for v in size)):
        raise UserError(f"invalid data.image_size={size!r}: must be [H,W] with two integers >= 1, "
                        f"e.g. data.image_size=[64,64], or null to keep the dataset's size")
    check_values([("data.channels", data_cfg.get("channels"), lambda v: v is None or (is_positive_int(v) and v in CHANNELS),
                   "1 (grey), 3 (colour) or null (the dataset's own)")])
    check_choice("data.resize", data_cfg.get("resize", "crop"), RESIZE_MODES)
