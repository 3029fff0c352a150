"""Pictures in every mode Pillow reads become the right 8-bit picture (sw.preprocess.picture_8bit).

Each case makes a picture from coco_cat.jpg in one mode and works out the
8-bit picture it must give with numpy, independently of the code under test
(palette lookups, the 16-bit high byte, the compositing formula, EXIF
rotations by ``np.rot90``). A 16-bit PNG of coco_cat gives the same
SqueezeNet logits as its 8-bit version on the golden backend.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sw.preprocess import ALPHA_BACKGROUND, PictureError, as_rgb_image, picture_8bit

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def cat_rgb() -> np.ndarray:
    """coco_cat.jpg decoded: uint8 (H, W, 3)."""
    from sw.shared import skip_without_shared

    root = skip_without_shared("images/coco_cat.jpg")
    with Image.open(root / "images/coco_cat.jpg") as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def cat_grey(cat_rgb) -> np.ndarray:
    """The cat as 8-bit grey (ITU-R 601 luma, as Pillow computes it): uint8 (H, W)."""
    return np.asarray(Image.fromarray(cat_rgb).convert("L"))


def write_png16(path, pixels: np.ndarray) -> None:
    """Write a 16-bit PNG (grey, or RGB for (H, W, 3)) by hand: Pillow cannot write 48-bit RGB PNGs."""
    pixels = np.asarray(pixels, dtype=">u2")
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))   # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def as_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int64)


def assert_picture(got: Image.Image, expected: np.ndarray, *, tolerance: int = 0) -> None:
    """``got`` is 8-bit, of the shape of ``expected``, and within ``tolerance`` of it everywhere."""
    assert got.mode in ("L", "RGB"), got.mode
    a = as_array(got)
    assert a.shape == expected.shape, (a.shape, expected.shape)
    diff = np.abs(a - expected.astype(np.int64))
    bad = np.argwhere(diff > tolerance)
    assert len(bad) == 0, (f"{len(bad)} pixels off by more than {tolerance}; first (index, got, expected): "
                           f"{[(tuple(i), a[tuple(i)], expected[tuple(i)]) for i in bad[:5]]}")


def alpha_ramp(shape) -> np.ndarray:
    """An alpha channel that sweeps 0..255 along the rows (every level present), uint8 (H, W)."""
    h, w = shape
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


# ---------------------------------------------------------------- 16-bit and wide modes


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16B", ">u2")])
def test_16bit_grey_keeps_its_high_byte(cat_grey, rng, mode, dtype):
    low = rng.integers(0, 256, cat_grey.shape)                        # low bytes must not matter
    im = Image.fromarray((cat_grey.astype(np.uint32) * 256 + low).astype(dtype))
    assert im.mode == mode
    got = picture_8bit(im)
    assert got.mode == "L"
    assert_picture(got, cat_grey)
    assert_picture(as_rgb_image(im), np.repeat(cat_grey[..., None], 3, axis=2))


def test_32bit_integer_grey_is_taken_as_16_bit_and_clipped(cat_grey):
    values = cat_grey.astype(np.int32) * 257
    values[0, :4] = (-5, 70000, 65535, 0)
    expected = cat_grey.copy()
    expected[0, :4] = (0, 255, 255, 0)
    im = Image.fromarray(values, "I")
    assert_picture(picture_8bit(im), expected)


def test_float_grey_is_rounded_on_the_0_255_scale(cat_grey):
    values = cat_grey.astype(np.float32) + 0.3
    values[0, :4] = (-3.0, 300.0, np.nan, 254.6)
    expected = cat_grey.copy()
    expected[0, :4] = (0, 255, 0, 255)
    assert_picture(picture_8bit(Image.fromarray(values, "F")), expected)


def test_16bit_grey_png_file(tmp_path, cat_grey):
    path = tmp_path / "grey16.png"
    Image.fromarray(cat_grey.astype(np.uint16) * 257).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I"), im.mode            # Pillow keeps the 16 bits
    assert_picture(picture_8bit(path), cat_grey)


def test_48bit_rgb_png_file(tmp_path, cat_rgb, rng):
    path = tmp_path / "rgb48.png"
    write_png16(path, cat_rgb.astype(np.uint32) * 256 + rng.integers(0, 256, cat_rgb.shape))
    assert_picture(as_rgb_image(path), cat_rgb)


def test_bilevel_becomes_0_or_255(cat_grey):
    im = Image.fromarray(cat_grey).convert("1")
    expected = np.where(np.asarray(im), 255, 0)
    got = picture_8bit(im)
    assert_picture(got, expected)
    assert set(np.unique(as_array(got))) == {0, 255}


# ---------------------------------------------------------------- colour modes


def test_palette_is_looked_up(cat_rgb):
    im = Image.fromarray(cat_rgb).quantize(64)
    palette = np.asarray(im.getpalette(), dtype=np.int64).reshape(-1, 3)
    assert_picture(as_rgb_image(im), palette[np.asarray(im)])


def test_palette_transparent_colour_is_background(cat_rgb):
    im = Image.fromarray(cat_rgb).quantize(64)
    im.info["transparency"] = 0
    index = np.asarray(im)
    palette = np.asarray(im.getpalette(), dtype=np.int64).reshape(-1, 3)
    expected = np.where((index == 0)[..., None], ALPHA_BACKGROUND, palette[index])
    assert (index == 0).any()
    assert_picture(as_rgb_image(im), expected)


def test_cmyk_without_black_is_the_rgb_picture(cat_rgb):
    assert_picture(as_rgb_image(Image.fromarray(cat_rgb).convert("CMYK")), cat_rgb)


def test_cmyk_with_black(cat_rgb, rng):
    cmy = 255 - cat_rgb.astype(np.int64)
    k = rng.integers(0, 256, cat_rgb.shape[:2])
    im = Image.fromarray(np.dstack([cmy, k]).astype(np.uint8), "CMYK")
    expected = (255 - k[..., None]) * (255 - cmy) / 255.0         # R = (1 - C)(1 - K), on 0..255
    assert_picture(as_rgb_image(im), np.rint(expected), tolerance=1)


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_transparency_is_composited_over_the_background(cat_rgb, cat_grey, mode):
    colour = cat_grey[..., None] if mode == "LA" else cat_rgb
    alpha = alpha_ramp(colour.shape[:2])
    im = Image.fromarray(np.dstack([colour, alpha]), mode)
    a = alpha[..., None] / 255.0
    expected = np.rint(colour * a + ALPHA_BACKGROUND * (1 - a))
    got = picture_8bit(im)
    assert got.mode == ("L" if mode == "LA" else "RGB")
    assert_picture(got, expected[..., 0] if mode == "LA" else expected, tolerance=1)
    opaque, clear = alpha == 255, alpha == 0
    assert (as_array(got)[opaque] == colour[opaque].squeeze()).all()
    assert (as_array(got)[clear] == ALPHA_BACKGROUND).all()


# ---------------------------------------------------------------- orientation


@pytest.mark.parametrize("orientation,turns", [(3, 2), (6, 3), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, cat_rgb, orientation, turns):
    """A JPEG stored turned, with the EXIF tag saying so, comes out upright (np.rot90 of what is stored)."""
    stored = np.ascontiguousarray(np.rot90(cat_rgb[:, :480], -turns))     # not square: a turn shows in the shape
    path = tmp_path / f"turned_{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as im:
        decoded = np.asarray(im.convert("RGB"))                 # the stored pixels, as the decoder gives them
    upright = np.rot90(decoded, turns)
    assert upright.shape == cat_rgb[:, :480].shape
    assert_picture(as_rgb_image(path), upright)
    assert np.abs(upright.astype(int) - cat_rgb[:, :480]).mean() < 3     # and that is the cat, upright


# ---------------------------------------------------------------- bad files


def test_bad_files_are_named_in_the_error(tmp_path, cat_rgb):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a picture\n")
    Image.fromarray(cat_rgb).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:5000])
    cases = [("missing.jpg", FileNotFoundError, "does not exist"), (".", IsADirectoryError, "is a directory"),
             ("empty.jpg", PictureError, "empty file"), ("notes.txt", PictureError, "not a picture"),
             ("cut.jpg", PictureError, "truncated")]
    for name, error, reason in cases:
        path = tmp_path / name
        with pytest.raises(error, match=reason) as info:
            picture_8bit(path)
        assert str(info.value).startswith(f"{path}: "), info.value


def test_relative_path_is_relative_to_the_current_directory(tmp_path, monkeypatch, cat_rgb):
    """No lookup in the shared folder: ``images/coco_cat.jpg`` exists there, not here."""
    from sw.shared import imagenet_preprocess, require_shared

    require_shared("images/coco_cat.jpg")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="^images/coco_cat.jpg: does not exist"):
        imagenet_preprocess("images/coco_cat.jpg")
    Image.fromarray(cat_rgb).save(tmp_path / "here.png")
    assert_picture(as_rgb_image("here.png"), cat_rgb)


# ---------------------------------------------------------------- the same answer


@pytest.fixture(scope="module")
def squeezenet_runner(q_squeezenet_imagenet):
    from hw.isa import EngineConfig
    from sw.networks import Runner

    with Runner("squeezenet", "golden", EngineConfig(), check=False, progress=False,
                qgraph=q_squeezenet_imagenet) as r:
        yield r


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_16bit_png_classifies_as_its_8bit_version(tmp_path, cat_rgb, cat_grey, squeezenet_runner, kind):
    """The issue's case (a 16-bit PNG was a "parachute"): identical logits, the 8 -> 16 -> 8 trip being exact."""
    from sw.networks import classify

    eight, sixteen = tmp_path / f"{kind}8.png", tmp_path / f"{kind}16.png"
    if kind == "grey":
        Image.fromarray(cat_grey).save(eight)
        Image.fromarray(cat_grey.astype(np.uint16) * 257).save(sixteen)
    else:
        Image.fromarray(cat_rgb).save(eight)
        write_png16(sixteen, cat_rgb.astype(np.uint16) * 257)
    assert np.array_equal(np.asarray(as_rgb_image(sixteen)), np.asarray(as_rgb_image(eight)))
    res8, top8 = classify(squeezenet_runner, eight)
    res16, top16 = classify(squeezenet_runner, sixteen)
    assert top16[0][0] == top8[0][0], (top16, top8)
    assert np.array_equal(res16.outputs[0].numpy(), res8.outputs[0].numpy())
    if kind == "rgb":
        assert top8[0][0] == 282, top8     # DATA.md: tiger cat (the grey cat is not asserted)
