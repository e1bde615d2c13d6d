"""One split of a prepared TFDS dataset, read by index from its array_record files.

`tfds.data_source` gives random access to decoded examples without TensorFlow. Labels are read
once with the images left undecoded (a fast pass), so classes can be chosen, label fractions
drawn and validation carved by index before a single image is decoded. Images are then either
decoded all at once into memory (`decoded`) or one by one in the streaming pipeline's workers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnexp.data.dataset import Split
from cnnexp.data.geometry import Geometry
from cnnexp.errors import UserError

READ_CHUNK = 4096  # examples per `__getitems__` call: bounded memory, few Python round trips


@dataclass(frozen=True, eq=False)
class RecordSplit:
    """A split on disk: `source[i][image_key]` is example i's decoded image; `labels` are all read."""

    source: Any  # tfds ArrayRecordDataSource (picklable: the streaming workers get a copy)
    image_key: str
    label_key: str
    labels: np.ndarray  # int32, one per example
    native_shape: tuple[int | None, int | None, int]  # H, W (None: they vary), C
    where: str  # "<dataset folder>:<split>": names the split in messages and keys the decode cache

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int, geometry: Geometry) -> np.ndarray:
        """Example `index`'s image at `geometry`'s stored size (uint8 HWC)."""
        return geometry.to_stored(np.asarray(self.source[int(index)][self.image_key]))

    def decoded(self, geometry: Geometry) -> Split:
        """Every image of the split in memory at `geometry`'s stored size; decoded once per process
        and geometry, so a multirun sweep reads the files once."""
        return _decoded(self, geometry)


@functools.lru_cache(maxsize=4)
def _decoded(split: RecordSplit, geometry: Geometry) -> Split:
    images = []
    for start in range(0, len(split), READ_CHUNK):
        batch = split.source.__getitems__(list(range(start, min(start + READ_CHUNK, len(split)))))
        images.extend(geometry.to_stored(np.asarray(example[split.image_key])) for example in batch)
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise UserError(f"{split.where}: images differ in size ({len(shapes)} sizes, e.g. "
                        f"{', '.join('x'.join(map(str, s)) for s in sorted(shapes)[:3])}); "
                        "set data.image_size=[H,W] to bring them to one")
    return Split(np.stack(images).astype(np.uint8), split.labels)


def record_split(builder: Any, split: str, image_key: str, label_key: str) -> RecordSplit:
    """`split` of a prepared TFDS `builder`, with its labels read (images not decoded)."""
    import tensorflow_datasets as tfds

    undecoded = builder.as_data_source(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
    labels = np.empty(len(undecoded), np.int32)
    for start in range(0, len(undecoded), READ_CHUNK):
        batch = undecoded.__getitems__(list(range(start, min(start + READ_CHUNK, len(undecoded)))))
        labels[start:start + len(batch)] = [example[label_key] for example in batch]
    shape = tuple(builder.info.features[image_key].shape)
    native = (*shape, 1) if len(shape) == 2 else shape
    return RecordSplit(builder.as_data_source(split=split), image_key, label_key, labels, native,
                       f"{builder.data_dir}:{split}")
