"""Reading pictures, and the host-side preprocessing of the SSD detector (RFSong-779).

:func:`picture_8bit` is the one place a picture file becomes pixels: it names
the file in every error, applies the EXIF orientation and turns every mode
Pillow reads (16-bit, float, palette, CMYK, transparency...) into the right
8-bit grey or RGB picture; :func:`as_rgb_image` is the same as RGB.

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
import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    import torch

__all__ = ["SSD_INPUT_SIZE", "SSD_MEAN_BGR", "ALPHA_BACKGROUND", "ImageSize", "PictureError", "check_input_file",
           "picture_8bit", "as_rgb_image", "ssd_preprocess"]

#: Side of the square SSD input, in pixels.
SSD_INPUT_SIZE = 300
#: Per-channel means subtracted from the BGR pixel values (0..255 scale).
SSD_MEAN_BGR = (104.0, 117.0, 123.0)


class ImageSize(NamedTuple):
    """Size of an original picture in pixels (Pillow order: width first)."""

    width: int
    height: int


class PictureError(ValueError):
    """A file that is not a picture Pillow can read, or a damaged one; the message starts with the file's name."""


#: Grey level that transparent pixels are composited over (white, as a viewer shows them on a page).
ALPHA_BACKGROUND = 255

#: Modes holding 16-bit grey levels (``I`` is the 32-bit integer mode Pillow gives some 16-bit files).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def check_input_file(path: str | os.PathLike, what: str = "a picture") -> str:
    """Check that ``path`` is a non-empty regular file (``what`` it should be names it in errors); its name.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        If it does not exist, or is a folder.
    PictureError
        If it is empty, or not a regular file (a device, a pipe: reading one could wait for ever).
    """
    name = os.fspath(path)
    if not os.path.lexists(name):
        raise FileNotFoundError(f"{name}: does not exist")
    if os.path.isdir(name):
        raise IsADirectoryError(f"{name}: is a directory, not {what}")
    if not os.path.isfile(name):
        raise PictureError(f"{name}: not a regular file (a device, a pipe or a broken link), not {what}")
    if os.path.getsize(name) == 0:
        raise PictureError(f"{name}: empty file (0 bytes), not {what}")
    return name


def _open_picture_file(path: str | os.PathLike) -> Image.Image:
    """Open and decode the picture file at ``path`` (any mode); every failure names the file."""
    name = check_input_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(name)
            im.load()
        return im
    except PermissionError:
        raise PermissionError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        raise PictureError(f"{name}: not a picture (Pillow cannot identify the file's format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise PictureError(f"{name}: picture too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:   # what Pillow's decoders raise on damaged data
        raise PictureError(f"{name}: damaged or truncated picture ({e})") from None


def _composite(im: Image.Image) -> Image.Image:
    """An ``LA``/``RGBA`` picture composited over :data:`ALPHA_BACKGROUND`: ``L`` or ``RGB``."""
    a = np.asarray(im, dtype=np.uint32)
    colour, alpha = a[..., :-1], a[..., -1:]
    out = (colour * alpha + ALPHA_BACKGROUND * (255 - alpha) + 127) // 255
    out = out.astype(np.uint8)
    return Image.fromarray(out[..., 0] if im.mode == "LA" else out, "L" if im.mode == "LA" else "RGB")


def picture_8bit(image: str | os.PathLike | Image.Image) -> Image.Image:
    """The 8-bit picture a network sees: mode ``L`` (grey) or ``RGB``, upright.

    Every picture the project reads goes through here. ``image`` is a path
    (relative to the current directory; opened and fully decoded, so that
    a damaged file fails here, naming the file) or a Pillow image. Then:

    * an EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`);
    * 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I``,
      taken as 16-bit values clipped to [0, 65535]) keeps its high byte
      (``v >> 8``), as Pillow itself does for 48-bit RGB PNGs, which it
      opens as 8-bit ``RGB``;
    * ``F`` (float) is taken on the 0..255 scale (the scale of
      ``convert("F")`` of an 8-bit picture), rounded and clipped;
    * ``1`` becomes ``L`` (0 or 255);
    * transparency (``LA``, ``RGBA``, ``PA``, ``La``, ``RGBa``, ``P`` or
      ``L``/``RGB`` with a transparent colour) is composited over white
      (:data:`ALPHA_BACKGROUND`): ``out = (c * a + 255 * (255 - a)) / 255``,
      rounded;
    * palette, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted by Pillow to ``RGB``.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        For a path that is missing, a folder, or unreadable.
    PictureError
        For a file that is empty, not a picture, damaged or truncated, or a
        mode that has no RGB meaning.
    TypeError
        If ``image`` is neither a path nor a Pillow image.
    """
    if isinstance(image, (str, os.PathLike)):
        with _open_picture_file(image) as im:
            try:
                return picture_8bit(im)
            except PictureError as e:
                raise PictureError(f"{os.fspath(image)}: {e}") from None
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a path or a PIL.Image.Image, got {type(image).__name__}")
    im = ImageOps.exif_transpose(image)
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(im).astype(np.int64), 0, 0xFFFF) >> 8
        return Image.fromarray(grey.astype(np.uint8), "L")
    if mode == "F":
        grey = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    if mode == "1":
        return im.convert("L")
    if mode in ("LA", "La") or (mode == "L" and "transparency" in im.info):
        return _composite(im.convert("LA"))
    if mode in ("RGBA", "RGBa", "PA") or "transparency" in im.info:
        return _composite(im.convert("RGBA"))
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise PictureError(f"picture mode {mode} has no RGB conversion ({e})") from None


def as_rgb_image(image: str | os.PathLike | Image.Image) -> Image.Image:
    """:func:`picture_8bit` of ``image``, grey made ``RGB``: the 8-bit RGB picture."""
    im = picture_8bit(image)
    return im if im.mode == "RGB" else im.convert("RGB")


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
    import torch  # here, so that reading a picture does not wait for torch to load

    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    rgb = as_rgb_image(image)
    original = ImageSize(*rgb.size)
    resized = rgb.resize((size, size), Image.Resampling.BILINEAR)
    hwc = np.asarray(resized, dtype=np.float32)[:, :, ::-1]  # RGB -> BGR
    hwc = hwc - np.asarray(mean_bgr, dtype=np.float32)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    return torch.from_numpy(chw).unsqueeze(0), original
