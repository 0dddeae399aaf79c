"""Images in folders, one sub-folder per identity (face data such as MS-Celeb / FaceScrub /
MegaFace laid out after alignment).

    <dir>/train/<identity>/*.{png,jpg,jpeg,bmp}     training identities
    <dir>/test/<identity>/*                         the probe set (other identities)
    <dir>/distractors/<anything>/*                  optional: distractor images

Images are decoded with Pillow, converted to RGB, resized to ``image_size`` x ``image_size``
(faces are expected aligned and cropped already) and scaled to ``[0, 1]``. Labels are the
identity's rank among the split's sorted folder names; distractor labels start after the probe
identities, so no distractor ever matches a probe.
"""

from __future__ import annotations

import os

import numpy as np

from sparse_flops.data.base import ArraySplit, DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "test")
DISTRACTORS = "distractors"


def _images_of(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS)
    )


def load_split(folder: str, image_size: int, label_offset: int = 0) -> ArraySplit:
    """One split folder of identity sub-folders, as ``(n, s, s, 3)`` float32 images."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isdir(folder):
        raise DataError(
            f"image folder {folder} is missing; lay out <dir>/train/<identity>/*.png and "
            "<dir>/test/<identity>/*.png and pass --config.data.dir=<dir>"
        )
    identities = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not identities:
        raise DataError(f"{folder} has no identity sub-folders (one folder per identity)")
    images, labels = [], []
    for label, identity in enumerate(identities):
        paths = _images_of(os.path.join(folder, identity))
        if not paths:
            raise DataError(
                f"{os.path.join(folder, identity)} holds no image ({', '.join(EXTENSIONS)}); "
                "remove the empty identity folder"
            )
        for path in paths:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                    images.append(np.asarray(im, np.uint8))
            except (OSError, UnidentifiedImageError, ValueError) as e:
                raise DataError(
                    f"{path} is not a readable image ({e}); remove or replace it"
                ) from e
            labels.append(label_offset + label)
    x = np.stack(images).astype(np.float32) / 255.0
    return ArraySplit(x, np.asarray(labels, np.int32))


def load(data_dir: str, image_size: int) -> dict[str, ArraySplit]:
    """``train`` and ``test`` (the probe set), and ``distractors`` when that folder exists."""
    if image_size <= 0:
        raise DataError(f"config.data.image_size must be positive, got {image_size}")
    if not os.path.isdir(data_dir):
        raise DataError(f"image folder root {data_dir} does not exist; set --config.data.dir")
    out = {name: load_split(os.path.join(data_dir, name), image_size) for name in SPLITS}
    distractors = os.path.join(data_dir, DISTRACTORS)
    if os.path.isdir(distractors):
        offset = int(out["test"].labels.max()) + 1
        out[DISTRACTORS] = load_split(distractors, image_size, offset)
    return out
