"""Decoding PNG, JPEG and FITS to (channels, size, size) uint8."""

import pickle

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

import pandas as pd

from zoobot.images import ImageError, asinh_stretch, crop_box, iter_catalog_batches, load_image


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def save_png(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_png_at_native_size_is_exact(tmp_path, rng, channels):
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    path = save_png(tmp_path / "galaxy.png", pixels)
    image = load_image(path, 32, channels)
    assert image.shape == (channels, 32, 32) and image.dtype == np.uint8
    if channels == 3:
        np.testing.assert_array_equal(image, pixels.transpose(2, 0, 1))
    else:
        np.testing.assert_array_equal(image[0], np.asarray(Image.fromarray(pixels).convert("L")))


def test_png_is_resized_channels_first(tmp_path):
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red everywhere
    image = load_image(save_png(tmp_path / "wide.png", pixels), 16, 3)
    assert image.shape == (3, 16, 16)
    assert (image[0] == 200).all() and (image[1:] == 0).all()


def test_rgba_palette_and_16_bit_png(tmp_path, rng):
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    image = load_image(save_png(tmp_path / "rgba.png", rgba), 8, 3)
    np.testing.assert_array_equal(image, rgba[..., :3].transpose(2, 0, 1))  # alpha dropped

    palette = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).quantize(16)
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(load_image(tmp_path / "palette.png", 8, 3), expected)

    deep = np.array([[0, 257, 65535, 25700]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    grey = load_image(tmp_path / "deep.png", 4, 1)
    np.testing.assert_array_equal(grey[0, 0], [0, 1, 255, 100])


def test_jpeg_draft_decoding_is_close_to_a_full_decode(tmp_path, rng):
    # a smooth blob with noise, like a galaxy cutout
    y, x = np.mgrid[:256, :256]
    blob = 220 * np.exp(-((x - 128) ** 2 + (y - 120) ** 2) / (2 * 30**2))
    pixels = np.clip(blob[..., None] + rng.normal(0, 5, (256, 256, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "galaxy.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    image = load_image(path, 64, 3)
    with Image.open(path) as full:
        reference = np.asarray(full.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert image.shape == (3, 64, 64)
    difference = np.abs(image.astype(int) - reference.transpose(2, 0, 1).astype(int))
    assert difference.mean() < 1.5
    assert load_image(path, 64, 1).shape == (1, 64, 64)


@pytest.mark.realdata
def test_real_gz1_jpeg(shared_data):
    path = sorted((shared_data / "gz1_sdss_6664" / "images").glob("*.jpeg"))[0]
    image = load_image(path, 128, 3)
    assert image.shape == (3, 128, 128)
    assert image[:, 54:74, 54:74].mean() > image[:, :10, :10].mean()  # galaxy brighter than sky


def write_fits(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32)).writeto(path)
    return path


def test_fits_2d_asinh_stretch(tmp_path, rng):
    data = rng.normal(0, 1, (16, 16))
    data[0, 3] = 1000.0  # a bright star on FITS row 0: the bottom of the picture
    image = load_image(write_fits(tmp_path / "g.fits", data), 16, 1)
    assert image.shape == (1, 16, 16) and image.dtype == np.uint8
    assert image[0, 15, 3] == 255  # flipped to the bottom row of the array
    # the stretch is monotonic: brighter flux never gets a darker pixel
    flux = data[::-1].ravel()
    pixels = image[0].ravel().astype(int)
    order = np.argsort(flux, kind="stable")
    assert (np.diff(pixels[order]) >= 0).all()
    # asinh lifts faint values above where a linear stretch between the same percentiles puts them
    stretched = asinh_stretch(data[None])
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    low, high = np.percentile(data, [0.5, 99.5])
    linear = np.clip((data - low) / (high - low), 0, 1)
    assert np.median(stretched) > np.median(linear) + 0.1


def test_fits_cubes_and_bands(tmp_path):
    cube = np.zeros((3, 8, 8))
    cube[0] = 10.0  # only the first band is bright
    cube[:, 0, 0] = 0.5  # keep the percentiles apart
    rgb = load_image(write_fits(tmp_path / "cube.fits", cube), 8, 3)
    assert rgb.shape == (3, 8, 8)
    assert rgb[0].mean() > 200 and rgb[1].mean() < 20 and rgb[2].mean() < 20

    grey = load_image(tmp_path / "cube.fits", 4, 1)
    assert grey.shape == (1, 4, 4)

    single = load_image(write_fits(tmp_path / "one.fits", cube[:1]), 8, 3)
    np.testing.assert_array_equal(single[0], single[1])

    write_fits(tmp_path / "five.fits", np.ones((5, 8, 8)))
    with pytest.raises(ImageError, match="expected 1 or 3 bands.*got 5"):
        load_image(tmp_path / "five.fits", 8, 3)


def test_fits_nan_pixels_are_black_and_all_nan_fails(tmp_path, rng):
    data = rng.uniform(1, 2, (8, 8))
    data[2, 2] = np.nan
    image = load_image(write_fits(tmp_path / "nan.fits", data), 8, 1)
    assert image[0, 8 - 1 - 2, 2] == 0

    with pytest.raises(ImageError, match="no finite pixel"):
        load_image(write_fits(tmp_path / "allnan.fits", np.full((8, 8), np.nan)), 8, 1)


def test_fits_image_in_an_extension(tmp_path, rng):
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(rng.normal(size=(8, 8)).astype(np.float32))])
    hdus.writeto(tmp_path / "ext.fits")
    assert load_image(tmp_path / "ext.fits", 8, 3).shape == (3, 8, 8)


def test_missing_corrupt_and_truncated_files_raise_image_error(tmp_path, rng):
    with pytest.raises(ImageError, match="file not found") as caught:
        load_image(tmp_path / "absent.png", 32, 3)
    assert caught.value.path.endswith("absent.png")

    (tmp_path / "noise.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="cannot decode") as caught:
        load_image(tmp_path / "noise.png", 32, 3)
    assert "noise.png" in str(caught.value)

    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg", 32, 3)

    (tmp_path / "bad.fits").write_bytes(b"SIMPLE  = not really a fits file")
    with pytest.raises(ImageError):
        load_image(tmp_path / "bad.fits", 32, 1)


def test_image_error_pickles_for_worker_processes(tmp_path):
    error = pickle.loads(pickle.dumps(ImageError(tmp_path / "x.png", "file not found")))
    assert error.reason == "file not found" and str(error).endswith("x.png: file not found")


def test_bad_arguments(tmp_path, rng):
    path = save_png(tmp_path / "g.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="channels must be 1"):
        load_image(path, 8, 4)
    with pytest.raises(ValueError, match="size must be"):
        load_image(path, 0, 3)


# ---------------------------------------------------------------- centre crop


@pytest.mark.parametrize(
    "width, height, fraction, box",
    [
        (424, 424, 0.5, (106, 106, 318, 318)),
        (423, 423, 0.35, (137, 137, 285, 285)),  # 148.05 -> 148 kept; 275 left over: 137 + 138
        (10, 10, 0.25, (3, 3, 6, 6)),  # 2.5 rounds up to 3
        (11, 11, 0.5, (2, 2, 8, 8)),  # 5.5 -> 6; the odd leftover pixel goes right / bottom
        (40, 20, 0.5, (10, 5, 30, 15)),
        (100, 100, 0.001, (49, 49, 50, 50)),  # at least one pixel
        (64, 64, 1.0, (0, 0, 64, 64)),
    ],
)
def test_crop_box(width, height, fraction, box):
    assert crop_box(width, height, fraction) == box


def bright_centre(side, inner, rng):
    """side x side RGB: black, with a random bright pattern in the central inner x inner square."""
    pixels = np.zeros((side, side, 3), dtype=np.uint8)
    start = (side - inner) // 2
    pixels[start : start + inner, start : start + inner] = rng.integers(128, 256, (inner, inner, 3), dtype=np.uint8)
    return pixels, pixels[start : start + inner, start : start + inner]


def test_png_crop_keeps_the_central_square(tmp_path, rng):
    pixels, centre = bright_centre(96, 48, rng)
    path = save_png(tmp_path / "g.png", pixels)
    # the crop is exactly the bright square: no resampling, the very pixels
    np.testing.assert_array_equal(load_image(path, 48, 3, crop_fraction=0.5), centre.transpose(2, 0, 1))
    # then resized like any image
    expected = np.asarray(Image.fromarray(centre).resize((24, 24), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(load_image(path, 24, 3, crop_fraction=0.5), expected.transpose(2, 0, 1))
    # without the crop the square fills only the middle half of the frame
    whole = load_image(path, 48, 3)
    assert whole[:, :11].max() == 0 and whole[:, 13:35, 13:35].min() > 100


def test_jpeg_crop_is_close_to_a_full_decode_crop(tmp_path, rng):
    # a 423 px galaxy (as GZ1's) whose bright core is off the centre of the crop, so a misplaced box shows
    y, x = np.mgrid[:423, :423]
    blob = 230 * np.exp(-((x - 200) ** 2 + (y - 225) ** 2) / (2 * 25**2))
    pixels = np.clip(blob[..., None] + rng.normal(0, 4, (423, 423, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "galaxy.jpg"
    Image.fromarray(pixels).save(path, quality=92)
    # decoded at 1/4 scale (box 26.25..79.25), 1/2 (68.5..142.5) and full scale (no draft)
    for fraction, size in [(0.5, 48), (0.35, 48), (0.3, 64)]:
        image = load_image(path, size, 3, crop_fraction=fraction)
        with Image.open(path) as full:
            full = full.convert("RGB")
            reference = np.asarray(full.crop(crop_box(423, 423, fraction)).resize((size, size), Image.Resampling.BILINEAR))
        difference = np.abs(image.astype(int) - reference.transpose(2, 0, 1).astype(int))
        assert difference.mean() < 1.5, (fraction, size, difference.mean())
        assert load_image(path, size, 1, crop_fraction=fraction).shape == (1, size, size)


@pytest.mark.parametrize("size", [32, 48, 100, 256])
@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_crop_one_is_bit_identical_to_no_crop(tmp_path, rng, size, suffix):
    """crop_fraction=1.0 decodes exactly as before crops existed: draft at size, then resize."""
    y, x = np.mgrid[:256, :256]
    blob = 220 * np.exp(-((x - 128) ** 2 + (y - 120) ** 2) / (2 * 30**2))
    pixels = np.clip(blob[..., None] + rng.normal(0, 5, (256, 256, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / f"galaxy.{suffix}"
    Image.fromarray(pixels).save(path)
    for channels, mode in [(3, "RGB"), (1, "L")]:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(mode, (size, size))
            image = image.convert(mode)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            before = np.asarray(image).reshape(size, size, channels).transpose(2, 0, 1)
        np.testing.assert_array_equal(load_image(path, size, channels, crop_fraction=1.0), before)


def test_fits_crop_is_the_centre_of_the_stretched_picture(tmp_path, rng):
    data = rng.normal(0, 1, (3, 16, 16))
    data[:, 4:12, 4:12] += np.linspace(5, 50, 64).reshape(8, 8)  # a bright gradient in the centre
    data[0, 5, 6] = 500.0  # a star in the crop, on FITS row 5 from the bottom
    path = write_fits(tmp_path / "cube.fits", data)
    whole = load_image(path, 16, 3)
    cropped = load_image(path, 8, 3, crop_fraction=0.5)
    # the same display values (stretch over the whole frame) and orientation as the uncropped image
    np.testing.assert_array_equal(cropped, whole[:, 4:12, 4:12])
    assert cropped[0, 16 - 1 - 5 - 4, 6 - 4] == 255
    # and resized after cropping
    assert load_image(path, 4, 1, crop_fraction=0.5).shape == (1, 4, 4)
    np.testing.assert_array_equal(load_image(path, 16, 3, crop_fraction=1.0), whole)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, 2, float("nan"), float("inf"), True, "0.5", None])
def test_bad_crop_fractions_are_refused(tmp_path, rng, bad):
    path = save_png(tmp_path / "g.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"crop_fraction: expected a number in \(0, 1\].*got"):
        load_image(path, 8, 3, crop_fraction=bad)
    catalog = pd.DataFrame({"id_str": ["a"], "file_loc": [str(path)]})
    with pytest.raises(ValueError, match="crop_fraction: expected"):
        iter_catalog_batches(catalog, 8, 3, crop_fraction=bad)  # at the call, before any batch


def test_catalog_batches_use_the_crop(tmp_path, rng):
    paths = [save_png(tmp_path / f"g{i}.png", bright_centre(40, 20, rng)[0]) for i in range(3)]
    catalog = pd.DataFrame({"id_str": ["a", "b", "c"], "file_loc": [str(p) for p in paths]})
    ids, images = zip(*iter_catalog_batches(catalog, 20, 3, batch_size=2, crop_fraction=0.5))
    np.testing.assert_array_equal(np.concatenate(ids), ["a", "b", "c"])
    expected = np.stack([load_image(p, 20, 3, crop_fraction=0.5) for p in paths])
    np.testing.assert_array_equal(np.concatenate(images), expected)
    assert expected.min() >= 128  # the crop is all galaxy


@pytest.mark.realdata
def test_real_gz1_jpeg_crop(shared_data):
    path = sorted((shared_data / "gz1_sdss_6664" / "images").glob("*.jpeg"))[0]
    whole, centre = load_image(path, 48, 3), load_image(path, 48, 3, crop_fraction=0.35)
    assert centre.shape == (3, 48, 48)
    assert centre.mean() > whole.mean()  # less sky, more galaxy
