"""Host-side image preprocessing for the SSD detector (RFSong-779).

The RFSong-779 detector expects the whole picture resized to 300x300 with
Pillow's bilinear filter, in BGR channel order, with the per-channel means
(104, 117, 123) subtracted and no further scaling (``../shared/DATA.md``).
The detector's boxes come out normalized to [0, 1]; :class:`ImageSize` keeps
the original size so that :func:`sw.detect.ssd_postprocess` can scale them
back to pixels.

ImageNet preprocessing (SqueezeNet classification) lives in :mod:`sw.shared`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

__all__ = ["SSD_INPUT_SIZE", "SSD_MEAN_BGR", "ImageSize", "as_rgb_image", "ssd_preprocess"]

#: Side of the square SSD input, in pixels.
SSD_INPUT_SIZE = 300
#: Per-channel means subtracted from the BGR pixel values (0..255 scale).
SSD_MEAN_BGR = (104.0, 117.0, 123.0)


class ImageSize(NamedTuple):
    """Size of an original picture in pixels (Pillow order: width first)."""

    width: int
    height: int


def as_rgb_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """Open ``image`` (a path or a Pillow image) as an RGB Pillow image.

    Parameters
    ----------
    image : str, os.PathLike or PIL.Image.Image
        Path of a picture file, or an already opened picture.

    Returns
    -------
    PIL.Image.Image
        The picture in mode ``"RGB"`` (grey, palette and alpha pictures are
        converted).

    Raises
    ------
    FileNotFoundError
        If ``image`` is a path that does not exist.
    TypeError
        If ``image`` is neither a path nor a Pillow image.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise FileNotFoundError(f"image file {os.fspath(image)!r} does not exist")
        with Image.open(image) as im:
            return im.convert("RGB")
    raise TypeError(f"expected a path or a PIL.Image.Image, got {type(image).__name__}")


def ssd_preprocess(
    image: str | os.PathLike | Image.Image,
    *,
    size: int = SSD_INPUT_SIZE,
    mean_bgr: tuple[float, float, float] = SSD_MEAN_BGR,
) -> tuple[torch.Tensor, ImageSize]:
    """Turn a picture into the SSD network input.

    The whole picture is resized (aspect ratio not kept) to ``size`` x
    ``size`` with Pillow's bilinear filter, converted to BGR, and ``mean_bgr``
    is subtracted from the 0..255 values; nothing is scaled.

    Parameters
    ----------
    image : str, os.PathLike or PIL.Image.Image
        The picture (any mode; converted to RGB first).
    size : int, optional
        Side of the square network input (300 for RFSong-779).
    mean_bgr : tuple of 3 floats, optional
        Means subtracted from the B, G and R channels.

    Returns
    -------
    x : torch.Tensor
        ``float32`` tensor of shape ``(1, 3, size, size)``, channels B, G, R.
    original : ImageSize
        Width and height of the picture before resizing.

    Raises
    ------
    ValueError
        If ``size`` is not a positive integer.
    """
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    rgb = as_rgb_image(image)
    original = ImageSize(*rgb.size)
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    hwc = np.asarray(resized, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR
    hwc = hwc - np.asarray(mean_bgr, dtype=np.float32)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    return torch.from_numpy(chw).unsqueeze(0), original
