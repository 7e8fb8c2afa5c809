"""common/image_cache.py, the on-disk cache (--cache-dir) when things go wrong: a full disk, a stale
build left by a killed run, another run's build under way, Ctrl-C while decoding."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple

import numpy as np
import pytest
from conftest import ENV, ROOT
from PIL import Image

from common import image_cache, images


def picture_folder(folder, count, side=8):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(np.full((side, side, 3), index % 256, np.uint8)).save(
            folder / f"{index:04d}.png")
    return images.find_images(folder)


def leftovers(cache):
    return sorted(path.name for path in cache.rglob("*") if ".building" in path.name)


def one_line(error):
    text = str(error)
    assert text and "\n" not in text, text
    return text


# --- --cache-dir on a full disk -----------------------------------------------------------

Usage = namedtuple("Usage", "total used free")


def test_a_cache_dir_without_room_is_refused_in_one_line(tmp_path, monkeypatch):
    paths = picture_folder(tmp_path / "pictures", 10)
    cache = tmp_path / "cache"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 50_000, 50_000))
    with pytest.raises(ValueError) as caught:
        image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="t")
    line = one_line(caught.value)
    assert str(cache) in line and "--cache-dir" in line and "needs" in line, line
    assert not leftovers(cache) and not list(cache.glob("t-*"))


def test_a_disk_that_fills_while_preallocating_gives_one_line_and_no_leftovers(
        tmp_path, monkeypatch):
    paths = picture_folder(tmp_path / "pictures", 10)
    cache = tmp_path / "cache"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(ValueError) as caught:
        image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="t")
    line = one_line(caught.value)
    assert str(cache) in line and "No space left on device" in line, line
    assert not leftovers(cache) and not list(cache.glob("t-*"))
    monkeypatch.undo()  # The disk has room again: the next run builds the cache.
    pixels, skipped, where = image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path,
                                                name="t")
    assert len(pixels) == 10 and where.startswith("decoded into") and not leftovers(cache)


def test_an_oserror_late_in_the_build_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    paths = picture_folder(tmp_path / "pictures", 4)
    cache = tmp_path / "cache"

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(ValueError) as caught:
        image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="t")
    assert str(cache) in one_line(caught.value)
    assert not leftovers(cache) and not list(cache.glob("t-*"))


def test_an_interrupt_while_building_leaves_nothing(tmp_path, monkeypatch):
    paths = picture_folder(tmp_path / "pictures", 30)
    cache = tmp_path / "cache"
    real = images.decode_image

    def interrupted(path, size, crop=1.0):
        if path.name == "0010.png":
            raise KeyboardInterrupt
        return real(path, size, crop)
    monkeypatch.setattr(images, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="t")
    assert not leftovers(cache) and not list(cache.glob("t-*"))


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_build_left_by_a_killed_run_is_cleaned_and_the_run_works(tmp_path):
    paths = picture_folder(tmp_path / "pictures", 6)
    cache = tmp_path / "cache"
    key = image_cache.cache_key(paths, 64, 1.0, tmp_path)
    stale = cache / f".t-{key}.building-{dead_pid()}"
    other = cache / f".other-{'0' * 20}.building-{dead_pid()}"  # Another set's, also dead.
    for folder in (stale, other):
        folder.mkdir(parents=True)
        (folder / "pixels.u8").write_bytes(bytes(100_000))
    pixels, skipped, where = image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path,
                                                name="t")
    assert len(pixels) == 6 and not skipped and not leftovers(cache)
    assert [int(image[0, 0, 0]) for image in pixels] == list(range(6))


def test_the_build_of_a_run_still_going_is_left_alone(tmp_path):
    paths = picture_folder(tmp_path / "pictures", 3)
    cache = tmp_path / "cache"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = cache / f".other-{'0' * 20}.building-{alive.pid}"
        busy.mkdir(parents=True)
        image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="t")
        assert busy.is_dir()
    finally:
        alive.kill()
        alive.wait()
    image_cache.load_images(paths, 64, cache_dir=cache, root=tmp_path, name="u")
    assert not busy.exists()


FULL_DISK = """
import sys
sys.path.insert(0, {root!r})
from common import image_cache, images
paths = images.find_images({pictures!r})
try:
    pixels, skipped, where = image_cache.load_images(paths, 64, cache_dir={cache!r},
                                                root={pictures!r}, name="t")
except ValueError as error:
    raise SystemExit(f"error: {{error}}")
print(len(pixels), where)
"""


def on_small_tmpfs(cache, code, megabytes=2):
    """Run `code` with `cache` a fresh tmpfs of `megabytes`, in a private mount namespace."""
    command = (f"mount -t tmpfs -o size={megabytes}m tmpfs {cache} && "
               f"{sys.executable} -c \"$CODE\"; status=$?; "
               f"ls -a {cache}; exit $status")
    return subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True,
                          text=True, env={**ENV, "CODE": code}, timeout=120)


def test_a_real_full_tmpfs_gives_one_line_not_a_bus_error(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs {cache}"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0:
        pytest.skip("cannot mount a private tmpfs here (unshare -rm)")
    # 200 pictures need 2.4 MB of pixels: more than the 2 MB disk holds.
    picture_folder(tmp_path / "many", 200)
    result = on_small_tmpfs(cache, FULL_DISK.format(root=str(ROOT), pictures=str(tmp_path / "many"),
                                                    cache=str(cache)))
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(cache) in last and "Traceback" not in result.stderr
    assert ".building" not in result.stdout  # `ls -a` of the tmpfs after the run.
    # 40 pictures (0.5 MB) fit, even after a killed run left a 1.5 MB build behind.
    picture_folder(tmp_path / "few", 40)
    stale = f"{cache}/.t-{'1' * 20}.building-{dead_pid()}"
    code = (f"import os; os.mkdir({stale!r}); "
            f"open({stale!r} + '/pixels.u8', 'wb').write(bytes(1_500_000))\n"
            + FULL_DISK.format(root=str(ROOT), pictures=str(tmp_path / "few"), cache=str(cache)))
    result = on_small_tmpfs(cache, code)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "40 decoded into" in result.stdout and ".building" not in result.stdout


# --- Ctrl-C while decoding ----------------------------------------------------------------

SLOW_DECODE = """
import os, sys, time
sys.path.insert(0, {root!r})
os.cpu_count = lambda: 2  # 4 decoding threads, whatever this machine has.
from common import image_cache, images
real = images.decode_image

def slow(path, size, crop=1.0):
    time.sleep(0.1)
    return real(path, size, crop)

images.decode_image = slow
paths = images.find_images({pictures!r})
print("decoding", flush=True)
try:
    image_cache.load_images(paths, 64, cache_dir={cache!r}, root={pictures!r}, name="t")
except KeyboardInterrupt:
    print("interrupted", flush=True)
    raise SystemExit(130)
print("finished", flush=True)
"""


@pytest.mark.parametrize("cached", [True, False])
def test_ctrl_c_while_decoding_stops_promptly_and_cleans_up(tmp_path, cached):
    picture_folder(tmp_path / "pictures", 400)  # 400 x 0.1 s on 4 threads: 10 s to decode.
    cache = tmp_path / "cache"
    code = SLOW_DECODE.format(root=str(ROOT), pictures=str(tmp_path / "pictures"),
                              cache=str(cache) if cached else None)
    code = code.replace("'None'", "None")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    assert child.stdout.readline().strip() == "decoding"
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    start = time.monotonic()
    try:
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    elapsed = time.monotonic() - start
    assert child.returncode == 130 and "interrupted" in out, (child.returncode, out, err)
    assert "Traceback" not in err, err
    assert elapsed < 3, f"took {elapsed:.1f} s to stop after Ctrl-C"
    if cached:
        assert not leftovers(cache) and not list(cache.glob("t-*"))
