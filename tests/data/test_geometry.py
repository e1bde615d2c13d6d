"""data.image_size / channels / resize: host-side resizing to the stored size, and the crop
windows the steps take on the device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from cnnexp.data.geometry import Geometry, center_crop, random_crop, validate_geometry_options
from cnnexp.errors import UserError


def _image(height: int, width: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(height * 100 + width).integers(0, 256, (height, width, channels), np.uint8)


@pytest.mark.parametrize("resize, stored", [("crop", (37, 37)), ("pad", (32, 32)), ("stretch", (32, 32))])
def test_every_mode_stores_one_size_whatever_the_image(resize, stored):
    geometry = Geometry((32, 32), None, resize)
    for height, width in ((20, 50), (64, 40), (32, 32), (7, 5)):
        out = geometry.to_stored(_image(height, width))
        assert out.shape == (*stored, 3) and out.dtype == np.uint8
    assert geometry.model_shape((None, None, 3)) == (32, 32, 3)
    assert geometry.stored_shape((None, None, 3)) == (*stored, 3)


def test_pad_keeps_the_whole_image_inside_black_borders():
    wide = np.full((10, 40, 1), 200, np.uint8)
    out = Geometry((32, 32), None, "pad").to_stored(wide)
    # 10x40 scaled by 0.8 -> 8x32, centred: rows 12..19 hold the image, the rest is black.
    assert out.shape == (32, 32, 1)
    assert (out[:12] == 0).all() and (out[20:] == 0).all() and (out[12:20] > 150).all()


def test_crop_keeps_the_centre_of_the_shorter_side_scaled_image():
    image = np.zeros((40, 80, 1), np.uint8)
    image[:, 30:50] = 255  # a bright centre band
    out = Geometry((16, 16), None, "crop").to_stored(image)  # stored 18x18 from a 18x36 resize
    assert out.shape == (18, 18, 1)
    assert out[:, 9].min() > 200 and out[:, 0].max() < 30  # centre bright, edges dark


def test_channels_convert_grey_and_colour():
    grey = _image(8, 8, 1)
    assert Geometry(None, 3).to_stored(grey).shape == (8, 8, 3)
    np.testing.assert_array_equal(Geometry(None, 3).to_stored(grey)[..., 2], grey[..., 0])
    colour = _image(8, 8, 3)
    assert Geometry(None, 1).to_stored(colour).shape == (8, 8, 1)
    assert Geometry().to_stored(colour) is colour  # nothing to do: not even a copy


def test_variable_sizes_without_an_image_size_say_how_to_fix_it():
    with pytest.raises(UserError, match=r"differ in size: set data.image_size=\[H,W\]"):
        Geometry().model_shape((None, None, 3))


def test_training_windows_are_random_per_image_and_step_evaluation_takes_the_centre():
    pixels = jnp.arange(2 * 10 * 10, dtype=jnp.float32).reshape(2, 10, 10, 1)
    train_view, eval_view = Geometry((6, 6), None, "crop").views()
    first = train_view(jax.random.key(0), pixels)
    assert first.shape == (2, 6, 6, 1)
    again = train_view(jax.random.key(0), pixels)
    np.testing.assert_array_equal(first, again)  # a function of the key only
    windows = {tuple(np.asarray(train_view(jax.random.key(k), pixels))[0, 0, 0]) for k in range(20)}
    assert len(windows) > 3  # the offset varies with the key
    np.testing.assert_array_equal(eval_view(None, pixels), pixels[:, 2:8, 2:8])
    np.testing.assert_array_equal(center_crop(pixels, (6, 6)), pixels[:, 2:8, 2:8])
    crops = random_crop(jax.random.key(1), pixels, (10, 10))
    np.testing.assert_array_equal(crops, pixels)  # a window of the whole size is the image
    assert Geometry((6, 6), None, "pad").views() == (None, None)


@pytest.mark.parametrize("changes, message", [
    ({"image_size": [32]}, "invalid data.image_size"),
    ({"image_size": [0, 32]}, "invalid data.image_size"),
    ({"image_size": 32}, "invalid data.image_size"),
    ({"image_size": [True, 32]}, "invalid data.image_size"),
    ({"channels": 2}, "invalid data.channels=2"),
    ({"resize": "zoom"}, "invalid data.resize='zoom': choose one of crop, pad, stretch"),
])
def test_bad_geometry_options_are_one_line_errors(changes, message):
    cfg = OmegaConf.create({"image_size": None, "channels": None, "resize": "crop", **changes})
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        validate_geometry_options(cfg)
