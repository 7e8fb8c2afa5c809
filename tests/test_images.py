"""common/images.py on ordinary files: decoding, cropping, modes, finding images, order."""

import numpy as np
import pytest
from PIL import Image

from common import images


def save(image, path, **options):
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path, **options)
    return path


def test_decode_image_crops_the_center_square_and_resizes(tmp_path):
    # A 200x100 picture: red left quarter, green middle half, blue right quarter.
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :50, 0] = image[:, 50:150, 1] = image[:, 150:, 2] = 255
    pixels = images.decode_image(save(image, tmp_path / "wide.png"), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 1] == 255).all() and (pixels[..., 0] == 0).all()  # Only the middle.
    # crop=0.5 keeps the central 50x50 of a square picture.
    square = np.zeros((100, 100, 3), np.uint8)
    square[25:75, 25:75] = 255
    inner = images.decode_image(save(square, tmp_path / "square.png"), 10, crop=0.5)
    assert (inner == 255).all()


def test_decode_image_turns_every_mode_into_rgb(tmp_path):
    from PIL import Image
    gray = save(Image.new("L", (30, 40), 100), tmp_path / "gray.jpg")
    rgba = save(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), tmp_path / "clear.png")
    palette = save(Image.new("RGB", (9, 9), (0, 0, 255)).convert("P"), tmp_path / "p.gif")
    tiny = save(Image.new("RGB", (1, 1), (10, 200, 30)), tmp_path / "one.bmp")
    webp = save(Image.new("RGB", (33, 17), (200, 200, 0)), tmp_path / "w.webp", lossless=True)
    deep = save(Image.fromarray(np.full((8, 8), 65535, np.uint16)), tmp_path / "deep.png")
    for path, color in [(gray, 100), (rgba, 255), (palette, (0, 0, 255)),
                        (tiny, (10, 200, 30)), (webp, (200, 200, 0)), (deep, 255)]:
        pixels = images.decode_image(path, 8)
        assert pixels.shape == (8, 8, 3), path
        np.testing.assert_allclose(pixels, np.broadcast_to(color, (8, 8, 3)), atol=3,
                                   err_msg=str(path))  # Transparent red lies on white.


def test_decode_image_uses_the_first_gif_frame(tmp_path):
    from PIL import Image
    frames = [Image.new("RGB", (10, 10), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert images.decode_image(tmp_path / "a.gif", 4)[..., 0].min() > 240


def test_decode_image_shrinks_big_jpegs_at_reduced_scale_as_well_as_in_full(tmp_path):
    # JPEGs of 2x the target or more are decoded at 1/2..1/8 scale; the result must match
    # a full decode (the same pixels, saved losslessly) followed by the same resize.
    from PIL import Image
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    jpeg = save(big, tmp_path / "big.jpg", quality=95)
    with Image.open(jpeg) as image:
        full = save(np.asarray(image.convert("RGB")), tmp_path / "full.png")
    fast, slow = (images.decode_image(path, 16).astype(float) for path in (jpeg, full))
    assert np.abs(fast - slow).mean() < 4


def test_decode_image_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    path = save(np.zeros((60, 60, 3), np.uint8), tmp_path / "big.png")
    with pytest.raises(ValueError, match="60x60 pixels is more than this loader accepts"):
        images.decode_image(path, 8)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_decode_image_raises_for_broken_files(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises((OSError, ValueError)):
        images.decode_image(path, 8)


def test_find_images_searches_nested_folders_and_survives_symlink_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.JPG", "a/b/y.png", "a/b/z.webp", "top.gif", "notes.txt", ".hidden.png",
                 "a/b/noext"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path)
    found = [path.relative_to(tmp_path).as_posix() for path in images.find_images(tmp_path)]
    assert found == ["a/b/y.png", "a/b/z.webp", "a/x.JPG", "top.gif"]


def test_decode_images_skips_and_keeps_order(tmp_path):
    paths = []
    for index in range(5):
        paths.append(save(np.full((4, 4, 3), index * 50, np.uint8), tmp_path / f"{index}.png"))
    (tmp_path / "1.png").write_bytes(b"")
    pixels, skipped = images.decode_images(paths, 2, workers=3)
    assert [int(image[0, 0, 0]) for image in pixels] == [0, 100, 150, 200]
    assert [path.name for path, _ in skipped] == ["1.png"]
    line = images.describe_skipped(skipped, 5)
    assert line.startswith("skipped 1 of 5 files that are not readable images: ")
    assert str(tmp_path / "1.png") in line
    many = [(f"f{index}", "bad") for index in range(5)]
    assert images.describe_skipped(many, 9).endswith("; and 2 more")


COLOR = (200, 100, 50)
EDGE = (0, 0, 255)


# --- 1xN and Nx1 pictures ----------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(1, 2), (2, 1), (1, 64), (64, 1), (1, 1),
                                           (3, 1000), (1000, 3), (4, 1), (1, 6), (2, 2)])
def test_thin_pictures_decode_to_their_central_square_not_black(tmp_path, width, height):
    # EDGE everywhere but where the central square may lie (either middle pixel of an even
    # length), which is COLOR: the decoded 64x64 must be all COLOR.
    side = min(width, height)
    image = np.empty((height, width, 3), np.uint8)
    image[...] = EDGE
    top, left = (height - side) // 2, (width - side) // 2
    image[top:top + side + (height - side) % 2, left:left + side + (width - side) % 2] = COLOR
    path = tmp_path / f"{width}x{height}.png"
    Image.fromarray(image).save(path)
    pixels = images.decode_image(path, 64)
    assert pixels.shape == (64, 64, 3)
    np.testing.assert_array_equal(pixels, np.broadcast_to(COLOR, (64, 64, 3)))


def test_the_centre_crop_keeps_exactly_a_square_of_the_shorter_side(tmp_path):
    # 1x5: rows 0..4; the central 1x1 is row 2, its neighbours differ.
    image = np.zeros((5, 1, 3), np.uint8)
    image[:, 0, 0] = [10, 60, 120, 180, 240]
    Image.fromarray(image).save(tmp_path / "column.png")
    assert (images.decode_image(tmp_path / "column.png", 8)[..., 0] == 120).all()
