"""Hostile files: the 64px loaders and scripts on folders of random bytes,
truncated and corrupted images, headers declaring billions of pixels, FIFOs, directories
and symlink loops named like images, files whose reading fails and names no terminal can
print. Nothing may crash, hang or exhaust memory: every file is decoded or skipped with a
reason, and every good image in the same folder is kept, in order.

The hostile folders are built from seeded random numbers, so a failure repeats. Decoding
runs in a fresh Python with a deadline: a hang (a FIFO opened for reading waits for a
writer forever) fails the test with every thread's stack instead of stalling the suite.
"""

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ENV, ROOT, run_main, shape_image

SIZE = 64
GOOD = 12  # Good images hidden among the hostile files of each folder.
DEADLINE = 60  # Seconds a child decoding a hostile folder may take; ~5 when all is well.
pytestmark = pytest.mark.skipif(sys.platform == "win32",
                                reason="FIFOs, symlinks and /dev are POSIX")
LIMIT = re.compile(r"pixels is more than this loader accepts|exceeds limit of")


# --- Hostile files ------------------------------------------------------------------------


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def valid_images(rng):
    """Small valid files of every format and flavor the loaders read: the seeds that the
    truncations and byte flips below corrupt."""
    picture = Image.fromarray(shape_image(rng, 48, 40))
    rgba = picture.copy()
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (40, 48), np.uint8)))
    frames = [Image.fromarray(shape_image(rng, 48, 40)) for _ in range(2)]
    return [
        ("png", encode(picture, "PNG")),
        ("png", encode(rgba, "PNG")),
        ("png", encode(picture.convert("L"), "PNG")),
        ("png", encode(picture.convert("P"), "PNG")),
        ("png", encode(Image.fromarray(np.full((40, 48), 40000, np.uint16)), "PNG")),
        ("jpg", encode(picture, "JPEG", quality=90)),
        ("jpeg", encode(picture, "JPEG", progressive=True)),
        ("jpg", encode(picture.convert("L"), "JPEG")),
        ("gif", encode(picture.convert("P"), "GIF")),
        ("gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:])),
        ("bmp", encode(picture, "BMP")),
        ("bmp", encode(picture.convert("P"), "BMP")),
        ("webp", encode(picture, "WEBP", quality=80)),
        ("webp", encode(rgba, "WEBP", lossless=True)),
        ("webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
    ]


def png_claiming(width, height):
    """A PNG whose header (with a correct checksum) declares width x height, and a tiny body."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b""))


def bmp_claiming(width, height):
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 100, 0, 0, 54) + info + bytes(100)


def gif_claiming(width, height):
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            + b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x08\x02\x4c\x01\x00;")


def jpeg_claiming(width, height):
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    start = data.find(b"\xff\xc0")  # The frame header: precision, height, width.
    data[start + 5:start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_claiming(width, height):
    """An animated WebP of two 16x16 frames on a width x height canvas. Pillow's WebP reader
    allocates the whole canvas while opening the file, before Image.open returns."""
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue")]
    data = bytearray(encode(frames[0], "WEBP", save_all=True, append_images=frames[1:],
                            lossless=True))
    assert data[12:16] == b"VP8X"
    data[24:27] = (width - 1).to_bytes(3, "little")
    data[27:30] = (height - 1).to_bytes(3, "little")
    return bytes(data)


# Each declares more pixels than common.images.MAX_PIXELS (10^8). The 10001x10000 and
# 12000x12000 ones lie below Pillow's own refusal (~1.8 * 10^8): only the loader's limit
# stops them.
HUGE = [
    ("png", png_claiming, (10001, 10000)), ("png", png_claiming, (12000, 12000)),
    ("png", png_claiming, (60000, 60000)), ("png", png_claiming, (65536, 32768)),
    ("png", png_claiming, (2**31 - 1, 2**31 - 1)),
    ("bmp", bmp_claiming, (10001, 10000)), ("bmp", bmp_claiming, (12000, 12000)),
    ("bmp", bmp_claiming, (60000, -60000)), ("bmp", bmp_claiming, (2**31 - 1, 2**31 - 1)),
    ("gif", gif_claiming, (12000, 12000)), ("gif", gif_claiming, (65535, 65535)),
    ("jpg", jpeg_claiming, (12000, 12000)), ("jpg", jpeg_claiming, (65535, 65535)),
    ("webp", webp_claiming, (12000, 12000)), ("webp", webp_claiming, (60000, 60000)),
    ("webp", webp_claiming, (2**24, 2**24)),
]

MAGIC = [("png", b"\x89PNG\r\n\x1a\n"), ("png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
         ("jpg", b"\xff\xd8\xff\xe0"), ("jpg", b"\xff\xd8\xff\xc0\0\x11\x08"),
         ("gif", b"GIF89a"), ("gif", b"GIF87a"), ("bmp", b"BM"),
         ("webp", b"RIFF\0\0\0\0WEBPVP8 "), ("webp", b"RIFF\0\0\0\0WEBPVP8L"),
         ("webp", b"RIFF\0\0\0\0WEBPVP8X")]
EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "gif", "webp", "JPG", "PNG")
COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
          (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
          (0, 128, 128), (170, 110, 40)]


def good_image(index):
    """A flat color, distinct per index, in a lossless format: its decoded pixels name it."""
    image = Image.new("RGB", (80, 70), COLORS[index])
    fmt, ext = [("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("PNG", "PNG")][index % 4]
    return ext, encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))


def make_hostile_folder(folder, seed, good=GOOD):
    """Fill `folder` with a seeded mix of hostile files and `good` flat-color images.

    Returns (kinds, extra): kinds maps each name find_images should list to its kind:
    "good" (NNN_good_07.png is a flat COLORS[7]), "must skip", or "either" (a corrupted
    file that may still decode). extra holds paths find_images does not list (a directory
    named like an image) but a caller could still hand to the decoder.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = valid_images(rng)
    files = []  # (kind, extension, bytes)
    for index in range(good):
        files.append((f"good {index:02d}", *good_image(index)))
    for _ in range(100):  # Truncated: half inside the first 64 bytes, where the header is.
        ext, data = seeds[rng.integers(len(seeds))]
        cut = rng.integers(1, min(64, len(data))) if rng.random() < 0.5 else \
            rng.integers(1, len(data))
        files.append(("either", ext, data[:cut]))
    for _ in range(200):  # 1 to 8 bytes changed: half in the header, half anywhere.
        ext, data = seeds[rng.integers(len(seeds))]
        data = bytearray(data)
        span = min(100, len(data)) if rng.random() < 0.5 else len(data)
        for position in rng.integers(0, span, rng.integers(1, 9)):
            data[position] ^= int(rng.integers(1, 256))
        files.append(("either", ext, bytes(data)))
    for _ in range(40):  # Random bytes, named like images.
        data = rng.integers(0, 256, rng.integers(1, 4096), np.uint8).tobytes()
        files.append(("either", EXTENSIONS[rng.integers(len(EXTENSIONS))], data))
    for _ in range(60):  # A real format's signature, then random bytes.
        ext, magic = MAGIC[rng.integers(len(MAGIC))]
        files.append(("either", ext, magic + rng.integers(0, 256, rng.integers(0, 2048),
                                                          np.uint8).tobytes()))
    for ext in EXTENSIONS[:6]:
        files.append(("must skip", ext, b""))
    for ext, make, (width, height) in HUGE:
        files.append(("must skip", ext, make(width, height)))
    # Formats other than the five the extensions name, disguised: Pillow reads them all,
    # but the loaders do not offer its rarer readers to a hostile file (EPS runs Ghostscript).
    files.append(("must skip", "jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n"
                  b"newpath 0 0 moveto 64 64 lineto stroke showpage\n"))
    for fmt, ext in [("TIFF", "png"), ("PPM", "gif"), ("TGA", "jpg"), ("PCX", "bmp")]:
        files.append(("must skip", ext, encode(Image.new("RGB", (20, 20)), fmt)))

    order = rng.permutation(len(files))
    kinds = {}
    for position, index in enumerate(order):
        kind, ext, data = files[index]
        name = f"{position:03d}_{kind.replace(' ', '_')}.{ext}"
        (folder / name).write_bytes(data)
        kinds[name] = "good" if kind.startswith("good") else kind

    def special(name, make):
        make(folder / name)
        kinds[name] = "must skip"

    special("fifo.jpg", os.mkfifo)  # Opening it for reading waits for a writer: forever.
    special("dangling.png", lambda path: path.symlink_to(folder / "nowhere.png"))
    special("loop_a.jpg", lambda path: path.symlink_to(folder / "loop_b.jpg"))
    special("loop_b.jpg", lambda path: path.symlink_to(folder / "loop_a.jpg"))
    special("self.png", lambda path: path.symlink_to(path))
    special("dev_zero.jpg", lambda path: path.symlink_to("/dev/zero"))  # Never ends.
    # A regular file whose every read fails (EIO): root reads past chmod 000.
    special("unreadable.jpg", lambda path: path.symlink_to("/proc/self/mem"))
    # Names print() cannot encode on a UTF-8 terminal, or that would break a line; "!"
    # sorts them first, among the few skipped files a run names.
    special(os.fsdecode(b"!bad \xff\xfe name.jpg"), lambda path: path.write_bytes(b"x"))
    special("!new\nline.png", lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n"))
    # Folder loops, one named like an image: find_images does not follow them.
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "sub" / "deeper" / "top.png").symlink_to(folder)
    (folder / "sub" / "up").symlink_to(folder / "sub")
    (folder / "a_folder.jpg").mkdir()
    return kinds, [folder / "a_folder.jpg"]


# --- Decoding in a child with a deadline -----------------------------------------------------


CHILD = r"""
import faulthandler, json, resource, sys
from pathlib import Path
import numpy as np
faulthandler.dump_traceback_later({deadline}, exit=True)  # A hang prints every stack.
sys.path.insert(0, {root!r})
from common import image_cache, images

folder, extra, work = {folder!r}, {extra!r}, {work!r}
paths = images.find_images(folder) + [Path(path) for path in extra]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels, skipped = images.decode_images(paths, {size})
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
cached, cached_skipped, where = image_cache.load_images(paths, {size}, cache_dir=work + "/cache",
                                                        root=folder)
line = images.describe_skipped(skipped, len(paths))
np.save(work + "/pixels.npy", pixels)
json.dump({{"paths": [str(path) for path in paths], "grown_kb": grown,
            "skipped": [[str(path), reason] for path, reason in skipped],
            "same_from_cache": bool(np.array_equal(pixels, cached))
                               and [[str(p), r] for p, r in cached_skipped]
                               == [[str(p), r] for p, r in skipped],
            "line": line}}, open(work + "/result.json", "w"))
"""


def decode_in_child(folder, extra, work):
    """find_images + decode_images (and the cached load_images) on `folder` in a fresh
    Python that treats every warning as an error. Returns (result dict, pixels)."""
    work.mkdir(exist_ok=True)
    code = CHILD.format(deadline=DEADLINE, root=str(ROOT), folder=str(folder),
                        extra=[str(path) for path in extra], work=str(work), size=SIZE)
    # -W error: a warning Pillow raises on a hostile file (DecompressionBombWarning ...)
    # must be a skipped file too, whatever the warnings filter of the run. (Deprecations
    # are left alone, as in pytest.ini: they come from imports, not files.)
    command = [sys.executable, "-W", "error", "-W", "ignore::DeprecationWarning", "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV,
                            timeout=DEADLINE + 30)
    assert result.returncode == 0, (
        f"decoding the hostile folder crashed or hung (exit {result.returncode}):\n"
        f"{result.stdout}\n{result.stderr[-6000:]}")
    return json.loads((work / "result.json").read_text()), np.load(work / "pixels.npy")


def test_every_hostile_file_is_decoded_or_skipped_and_good_images_stay_in_order(tmp_path):
    folder = tmp_path / "data"
    kinds, extra = make_hostile_folder(folder, seed=6)
    result, pixels = decode_in_child(folder, extra, tmp_path / "work")
    names = [Path(path).name for path in result["paths"]]
    # find_images hands every file named like an image to the decoder, FIFO and links too.
    assert sorted(names) == sorted([*kinds, *(path.name for path in extra)])
    skipped = [path for path, _ in result["skipped"]]
    assert pixels.dtype == np.uint8 and pixels.shape == (len(names) - len(skipped), SIZE,
                                                         SIZE, 3)
    assert skipped == [path for path in result["paths"] if path in skipped]  # In order.
    for path, reason in result["skipped"]:
        assert isinstance(reason, str) and reason.strip(), path
    skipped_names = {Path(path).name for path in skipped}
    must = {name for name, kind in kinds.items() if kind == "must skip"}
    must |= {path.name for path in extra}
    assert must <= skipped_names, f"decoded, should be skipped: {sorted(must - skipped_names)}"
    # Every good image survives, in place among the decoded ones: its flat color says so.
    kept = [name for name in names if name not in skipped_names]
    goods = sorted(name for name, kind in kinds.items() if kind == "good")
    assert len(goods) == GOOD and set(goods) <= set(kept)
    for name in goods:
        row = pixels[kept.index(name)].astype(int)
        color = COLORS[int(name.split("_good_")[1][:2])]
        assert np.abs(row - color).max() <= 2, name
    # Truncated, flipped and random files were decoded or skipped, never lost: counted.
    either = [name for name, kind in kinds.items() if kind == "either"]
    assert len(either) == 400 and any(name in skipped_names for name in either)
    # The cached path (memory map on disk) sees exactly the same files.
    assert result["same_from_cache"]
    # Decoding a few hundred small files, threads and all, needs little memory.
    assert result["grown_kb"] < 400 * 1024, f"peak memory grew {result['grown_kb']} kB"
    # The line a run prints names the first skipped files in plain, one-line text.
    line = result["line"]
    assert line.startswith(f"skipped {len(skipped)} of {len(names)} files")
    assert line.isprintable()  # No newline, no lone surrogate print() cannot encode.
    assert r"!bad \udcff\udcfe name.jpg" in line and r"!new\nline.png" in line


HUGE_CHILD = r"""
import faulthandler, json, resource, sys, time
faulthandler.dump_traceback_later({deadline}, exit=True)
sys.path.insert(0, {root!r})
from common import images

def vm_bytes():
    return int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()

# 256 MB of address space above what is mapped now: a reader that allocates anything like
# the declared size (a 12000x12000 canvas alone is 576 MB) fails with MemoryError instead
# of being refused by the pixel limit, and the test sees which.
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + 256 * 2**20, resource.RLIM_INFINITY))
rows = []
for path in {paths!r}:
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels, skipped = images.decode_images([path], {size}, workers=1)
    rows.append([path, len(pixels), skipped[0][1] if skipped else None,
                 time.perf_counter() - start,
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before])
print(json.dumps(rows))
"""


def test_huge_declared_sizes_are_refused_quickly_without_allocating(tmp_path):
    paths = []
    for ext, make, (width, height) in HUGE:
        path = tmp_path / f"{make.__name__}_{width}x{height}.{ext}"
        path.write_bytes(make(width, height))
        paths.append(str(path))
    code = HUGE_CHILD.format(deadline=DEADLINE, root=str(ROOT), paths=paths, size=SIZE)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=ENV, timeout=DEADLINE + 30)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-6000:]}"
    for path, decoded, reason, seconds, grown_kb in json.loads(result.stdout):
        name = Path(path).name
        assert decoded == 0 and reason is not None, f"{name} was decoded"
        assert LIMIT.search(reason), f"{name} not refused by a pixel limit: {reason}"
        assert seconds < 5, f"{name} took {seconds:.1f} s to refuse"
        assert grown_kb < 64 * 1024, f"{name} grew peak memory by {grown_kb} kB"


# --- The scripts, as a user runs them --------------------------------------------------------


def test_a_run_on_a_hostile_folder_skips_the_bad_files_and_trains(tmp_path, monkeypatch):
    kinds, _ = make_hostile_folder(tmp_path / "data", seed=7)
    out = tmp_path / "run"
    result = run_main("train_animals.py", "--data-dir", tmp_path / "data", "--out-dir", out,
                      "--max-steps", 1, "--epochs", 1, "--batch-size", 8, "--cache-dir",
                      tmp_path / "cache", check=False)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-6000:]}"
    assert "Traceback" not in result.stderr
    count = int(re.search(r"^(\d+) training images from ", result.stdout, re.M).group(1))
    skipped = re.search(r"^skipped (\d+) of (\d+) files that are not readable images: ",
                        result.stdout, re.M)
    assert skipped, result.stdout
    assert count >= GOOD and int(skipped.group(2)) == count + int(skipped.group(1)) == len(kinds)
    assert int(skipped.group(1)) >= sum(kind == "must skip" for kind in kinds.values())
    assert r"!bad \udcff\udcfe name.jpg" in result.stdout  # Escaped, not a crash of print().
    assert (out / "generator.keras").is_file() and (out / "generator.keras").stat().st_size


def test_a_folder_of_only_hostile_files_ends_with_one_error_line(tmp_path):
    # train_artworks.py reads one folder per artist.
    folder = tmp_path / "data"
    kinds, _ = make_hostile_folder(folder / "Rembrandt", seed=8, good=0)
    for name in list(kinds):  # Only the files no reader may accept.
        if kinds[name] == "either":
            (folder / "Rembrandt" / name).unlink()
            del kinds[name]
    result = run_main("train_artworks.py", "--data-dir", folder, "--out-dir",
                      tmp_path / "run", "--max-steps", 1, "--epochs", 1, "--batch-size", 8,
                      check=False)
    assert result.returncode == 1, f"{result.stdout}\n{result.stderr[-6000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    assert str(folder / "Rembrandt") in errors[0] and "has no readable images" in errors[0]
    assert f"({len(kinds)} files" in errors[0]
    assert not (tmp_path / "run" / "generator.keras").exists()
