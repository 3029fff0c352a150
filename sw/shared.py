"""Where the real models and images live, and the ImageNet preprocessing they expect.

The pretrained weights and sample pictures are third-party data kept beside the
repository, never inside it (see ``../shared/DATA.md``). Code finds them at
``$KINDLING_SHARED`` when that variable is set, else at ``<repo>/../shared``.
Tests that need them call :func:`skip_without_shared` and are skipped with a
reason naming the missing file when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "ENV_VAR", "IMAGENET_MEAN", "IMAGENET_STD", "shared_dir", "shared_path", "require_shared",
    "skip_without_shared", "imagenet_preprocess", "imagenet_labels",
]

#: Environment variable that overrides the location of the shared data.
ENV_VAR = "KINDLING_SHARED"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared data directory: ``$KINDLING_SHARED`` if set, else ``<repo>/../shared``.

    The directory is not required to exist; use :func:`require_shared` to get a
    file that must.
    """
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser().resolve() if env else (_REPO_ROOT.parent / "shared").resolve()


def shared_path(*parts: str | os.PathLike) -> Path:
    """``shared_dir() / parts...`` without checking that it exists."""
    return shared_dir().joinpath(*parts)


def require_shared(path: str | os.PathLike) -> Path:
    """Resolve ``path`` inside the shared directory and check that it exists.

    Parameters
    ----------
    path : str or path-like
        A path relative to the shared directory (e.g.
        ``"models/squeezenet1_1/weights"``), or an absolute path.

    Returns
    -------
    pathlib.Path
        The existing file or directory.

    Raises
    ------
    FileNotFoundError
        When it does not exist; the message names the path and how to point
        the project at the data.
    """
    p = Path(path)
    full = p if p.is_absolute() else shared_dir() / p
    if not full.exists():
        raise FileNotFoundError(
            f"shared data not found: {full} (the real models and images live outside the repository, "
            f"at <repo>/../shared or wherever ${ENV_VAR} points; see DATA.md there)")
    return full


def skip_without_shared(*paths: str | os.PathLike) -> Path:
    """In a test: skip it unless every ``path`` (relative to the shared directory) exists.

    Returns the shared directory, so a test can write
    ``root = skip_without_shared("images/coco_cat.jpg")``.
    """
    import pytest  # only tests call this; keep pytest out of the runtime imports

    for p in paths or (".",):
        try:
            require_shared(p)
        except FileNotFoundError as e:
            pytest.skip(str(e))
    return shared_dir()


def imagenet_preprocess(image, *, resize: int = 256, crop: int = 224, normalize: bool = True) -> torch.Tensor:
    """ImageNet evaluation preprocessing, as DATA.md specifies: a ``1x3xcrop x crop`` float32 tensor.

    Short side resized to ``resize`` with PIL bilinear (the long side to
    ``round(resize * long / short)``: with it the float SqueezeNet reproduces the
    softmax values DATA.md quotes, 0.55 and 0.36; truncating, as torchvision's
    ``Resize`` does, gives 0.33 on coco_dog), centre crop
    ``crop`` (offsets ``round((size - crop) / 2)``), scaled to [0, 1], minus
    :data:`IMAGENET_MEAN`, divided by :data:`IMAGENET_STD`, RGB, NCHW.

    Parameters
    ----------
    image : str, path-like or PIL.Image.Image
        A picture file (a relative path is relative to the current
        directory: a shared picture is ``require_shared("images/coco_cat.jpg")``)
        or an opened picture; read by :func:`sw.preprocess.as_rgb_image`
        (any mode, EXIF orientation applied).
    resize, crop : int
        Short-side size and centre-crop size.
    normalize : bool
        Apply the mean/std normalization (``False`` leaves values in [0, 1]).
    """
    import torch
    from PIL import Image

    from sw.preprocess import as_rgb_image

    im = as_rgb_image(image)
    w, h = im.size
    size = (resize, round(resize * h / w)) if w <= h else (round(resize * w / h), resize)
    im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    if w < crop or h < crop:
        raise ValueError(f"resized image {w}x{h} is smaller than the {crop}x{crop} crop")
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    im = im.crop((left, top, left + crop, top + crop))
    x = np.asarray(im, dtype=np.float32) / 255.0
    if normalize:
        x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names of ``images/imagenet_labels.txt`` (index = line number)."""
    lines = require_shared("images/imagenet_labels.txt").read_text().splitlines()
    labels = [ln.strip() for ln in lines if ln.strip()]
    if len(labels) != 1000:
        raise ValueError(f"expected 1000 ImageNet labels, found {len(labels)}")
    return labels
