"""common/download.py against a fake Kaggle on 127.0.0.1 (tests/fake_kaggle.py): offline.

Each test gets its own kagglehub cache (KAGGLEHUB_CACHE), a HOME without credentials and
no KAGGLE_USERNAME/KAGGLE_KEY, so nothing from this machine leaks in, and kagglehub talks
to the fake server only (KAGGLE_API_ENVIRONMENT). Stalls use a 2 s timeout.
"""

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.download import (Folder, KaggleDataset, add_download_argument, describe,
                             find_folder, resolve_data_dir)
from conftest import ROOT, process_server, run_main
from fake_kaggle import FakeKaggle, make_zip

pytest.importorskip("kagglehub")

RED, GREEN = (200, 30, 30), (30, 200, 30)

# The three specs the 64x64 scripts are meant to use (sizes do not matter to the fake).
ANIMALS = KaggleDataset(name="AFHQ", handle="andrewmvd/animal-faces", version=1,
                        size_bytes=20_000, find=Folder(holding=("cat", "dog", "wild"),
                                                       prefer=("train",)))
FACES = KaggleDataset(name="CelebA", handle="jessicali9530/celeba-dataset", version=2,
                      size_bytes=20_000, find=Folder(named="img_align_celeba", images=True))
ARTWORKS = KaggleDataset(name="Best Artworks of All Time",
                         handle="ikarus777/best-artworks-of-all-time", version=1,
                         size_bytes=20_000, find=Folder(holding=("Rembrandt", "Pablo_Picasso")))

# Each dataset laid out as its Kaggle archive is, in miniature.
AFHQ_LAYOUT = {f"afhq/{split}/{kind}/flickr_{kind}_00000{index}.jpg": RED
               for split in ("train", "val") for kind in ("cat", "dog", "wild")
               for index in range(2)}
CELEBA_LAYOUT = {**{f"img_align_celeba/img_align_celeba/00000{index}.jpg": GREEN
                    for index in range(1, 5)},
                 "list_attr_celeba.csv": "image_id,Smiling\n000001.jpg,1\n",
                 "list_eval_partition.csv": "image_id,partition\n000001.jpg,0\n"}
ARTWORKS_LAYOUT = {**{f"images/images/{artist}/{artist}_{index}.jpg": RED
                      for artist in ("Rembrandt", "Pablo_Picasso", "Vincent_van_Gogh")
                      for index in range(1, 3)},
                   **{f"resized/resized/{artist}_1.jpg": GREEN
                      for artist in ("Rembrandt", "Pablo_Picasso")},
                   "artists.csv": "id,name\n0,Rembrandt\n"}


def repacked(layout, top):
    """The same archive with one more folder on top, as a re-packed upload would have."""
    return {f"{top}/{name}": content for name, content in layout.items()}


def key(dataset):
    return f"{dataset.handle}/{dataset.version}"


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    """A running fake Kaggle, an empty kagglehub cache in tmp_path and no credentials."""
    import kagglehub.config

    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "TBE_RUNTIME_ADDR",
                 "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL", "HTTP_PROXY",
                 "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "DCGAN_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # No ~/.kaggle/kaggle.json nor access_token.
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))  # kagglehub's own lookup.
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(kagglehub.config, "_kaggle_credentials", None)  # kagglehub.login()'s
    fake = FakeKaggle()
    fake.archives = {key(ANIMALS): make_zip(AFHQ_LAYOUT), key(FACES): make_zip(CELEBA_LAYOUT),
                     key(ARTWORKS): make_zip(ARTWORKS_LAYOUT)}
    with fake:
        for name, value in fake.environ().items():  # Kaggle's http://localhost is the fake.
            monkeypatch.setenv(name, value)
        yield fake


def unpacked(dataset):
    """Where kagglehub unpacks the pinned version (KAGGLEHUB_CACHE/datasets/owner/name/...)."""
    return Path(os.environ["KAGGLEHUB_CACHE"], "datasets", dataset.handle, "versions",
                str(dataset.version))


def archive(dataset):
    return Path(os.environ["KAGGLEHUB_CACHE"], "datasets", dataset.handle,
                f"{dataset.version}.archive")


def no_dataset_left(dataset):
    """Nothing under the cache that looks like the dataset, and no unpacked folder at all."""
    cache = Path(os.environ["KAGGLEHUB_CACHE"])
    return not unpacked(dataset).exists() and (
        not cache.exists() or find_folder(cache, dataset.find) is None)


# --- Downloads that work --------------------------------------------------------------------


@pytest.mark.parametrize("dataset, layout, expected", [
    (ANIMALS, AFHQ_LAYOUT, "afhq/train"),
    (FACES, CELEBA_LAYOUT, "img_align_celeba/img_align_celeba"),
    (ARTWORKS, ARTWORKS_LAYOUT, "images/images"),
    (ANIMALS, repacked(AFHQ_LAYOUT, "animal-faces"), "animal-faces/afhq/train"),
    (FACES, repacked(CELEBA_LAYOUT, "celeba"), "celeba/img_align_celeba/img_align_celeba"),
], ids=["animals", "faces", "artworks", "animals-repacked", "faces-repacked"])
def test_first_call_downloads_the_pinned_version_and_finds_the_folder(
        kaggle, tmp_path, capfd, dataset, layout, expected):
    kaggle.archives[key(dataset)] = make_zip(layout)
    folder, origin = resolve_data_dir(None, tmp_path / "data" / "missing", dataset)

    assert folder == unpacked(dataset) / expected
    assert origin == {"source": "kaggle", "dataset": dataset.name, "handle": dataset.handle,
                      "version": dataset.version, "folder": str(folder),
                      "description": describe(origin)}
    assert describe(origin) == (f"data: Kaggle dataset {dataset.handle} version "
                                f"{dataset.version}, cached at {folder}")
    (method, _, headers, body), = kaggle.api_calls()
    assert body["datasetVersionNumber"] == dataset.version  # Pinned, not "the latest".
    assert "Authorization" not in headers  # No credentials from this machine were used.
    assert "100%" in capfd.readouterr().err  # kagglehub's progress bar was left visible.


def test_a_second_call_reuses_the_cache_with_the_server_down(kaggle, tmp_path):
    first, _ = resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    kaggle.stop()  # Nothing listens any more: only the cache can answer.

    again, origin = resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    offline, _ = resolve_data_dir(None, tmp_path / "missing", ANIMALS, download=False)

    assert again == offline == first and origin["version"] == ANIMALS.version
    assert len(kaggle.api_calls()) == 1


def test_a_given_data_dir_is_used_as_is_and_never_replaced_by_a_download(kaggle, tmp_path):
    default = tmp_path / "default"
    default.mkdir()
    folder, origin = resolve_data_dir(default, None, ANIMALS)
    assert folder == default and describe(origin) == f"data: folder {default}"
    for given, words in ((tmp_path / "not-there", "does not exist"),
                         (tmp_path / "file.zip", "is a file")):
        given.parent.mkdir(exist_ok=True)
        if given.suffix:
            given.write_bytes(b"PK")
        with pytest.raises(ValueError) as error:  # Said so, never downloaded instead.
            resolve_data_dir(given, default, ANIMALS)
        assert_one_line(error, str(given), words, "--data-dir")
    assert kaggle.requests == []


def test_an_existing_default_folder_is_used_without_a_download(kaggle, tmp_path):
    default = tmp_path / "data" / "afhq" / "train"
    default.mkdir(parents=True)
    folder, origin = resolve_data_dir(None, default, ANIMALS)
    assert folder == default and origin == {"source": "folder", "folder": str(default),
                                            "description": f"data: folder {default}"}
    assert kaggle.requests == []


def test_find_folder_goes_by_structure():
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        for name in ("x/val/cat/a.jpg", "x/val/dog/a.jpg", "x/val/wild/a.jpg",
                     "y/deep/train/cat/a.png", "y/deep/train/dog/a.png",
                     "y/deep/train/wild/b/a.png", "z/cat/a.jpg", "z/dog/a.jpg"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"")
        (root / "z" / "wild").mkdir()  # Empty: a name alone is not the dataset.
        rule = Folder(holding=("cat", "dog", "wild"), prefer=("train",))
        assert find_folder(root, rule) == root / "y" / "deep" / "train"  # Preferred, deeper.
        assert find_folder(root, Folder(holding=("cat", "dog", "wild"))) == root / "x" / "val"
        assert find_folder(root, Folder(named="train", images=True)) is None
        assert find_folder(root / "z", rule) is None


def test_an_archive_without_the_expected_folder_is_one_line(kaggle, tmp_path):
    kaggle.archives[key(ANIMALS)] = make_zip({"afhq/train/cats/a.jpg": RED})  # Re-organised.
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert_one_line(error, "AFHQ", "has no a folder holding subfolders cat, dog and wild",
                    "--data-dir")


# --- Failures: one line each, naming the dataset and the fix; nothing half-made left ---------


def assert_one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


@pytest.mark.parametrize("mode, parts", [
    ("down", ["cannot reach Kaggle", "--data-dir"]),
    ("403", ["HTTP 403", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "kagglehub.login()",
             "--data-dir"]),
    ("404", ["HTTP 404", "andrewmvd/animal-faces/versions/1", "--data-dir"]),
    ("corrupt", ["corrupt", "run again", "--data-dir"]),
    ("truncated", ["corrupt", "run again"]),
    ("checksum", ["corrupt", "run again"]),
    ("cut", ["broke off", "run again"]),
    ("stall", ["stalled", "2 s", "run again"]),
    ("stall-body", ["stalled", "2 s", "run again"]),
])
def test_each_failure_is_one_line_and_leaves_no_half_dataset(kaggle, tmp_path, mode, parts):
    from requests.adapters import HTTPAdapter

    send = HTTPAdapter.send
    if mode == "down":
        kaggle.stop()
    kaggle.mode = mode
    started = time.monotonic()
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS, timeout=2)
    assert time.monotonic() - started < 15  # A stall ends by the timeout, not never.
    assert_one_line(error, "AFHQ", *parts)
    assert no_dataset_left(ANIMALS)
    if mode in ("corrupt", "truncated", "checksum"):
        assert not archive(ANIMALS).exists()  # Deleted, so the next run starts afresh.
    assert HTTPAdapter.send is send  # The timeout was scoped to the download.


def test_a_corrupt_download_then_a_good_one_works(kaggle, tmp_path):
    kaggle.mode = "corrupt"
    with pytest.raises(ValueError):
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    kaggle.mode = "normal"
    folder, _ = resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert folder == unpacked(ANIMALS) / "afhq" / "train"
    assert len(list(folder.rglob("*.jpg"))) == 6


def test_too_little_free_space_is_refused_before_downloading(kaggle, tmp_path):
    huge = KaggleDataset(ANIMALS.name, ANIMALS.handle, ANIMALS.version, 10**18, ANIMALS.find)
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", huge)
    assert_one_line(error, "AFHQ", "2000000000.0 GB free", "KAGGLEHUB_CACHE", "--data-dir")
    assert kaggle.requests == []


def test_a_disk_that_fills_up_during_the_download_is_one_line(kaggle, tmp_path, monkeypatch):
    import kagglehub

    def fill_the_disk(handle):  # As kagglehub would fail half-way through unpacking.
        (unpacked(ANIMALS) / "afhq" / "train" / "cat").mkdir(parents=True)
        archive(ANIMALS).write_bytes(b"PK")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kagglehub, "dataset_download", fill_the_disk)
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert_one_line(error, "AFHQ", "is full", "KAGGLEHUB_CACHE")
    assert not unpacked(ANIMALS).exists() and not archive(ANIMALS).exists()


def test_no_download_without_a_folder_says_where_to_put_the_data(kaggle, tmp_path):
    default = tmp_path / "data" / "afhq" / "train"
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, default, ANIMALS, download=False)
    assert_one_line(error, "AFHQ", f"{default} does not exist", "--no-download",
                    "--data-dir", "andrewmvd/animal-faces version 1")
    assert kaggle.requests == []


def test_without_kagglehub_it_says_pip_install_and_folders_still_work(kaggle, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # `import kagglehub` now fails.
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert_one_line(error, "AFHQ", "pip install", "kagglehub", "--data-dir")
    with pytest.raises(ValueError) as error:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS, download=False)
    assert_one_line(error, "AFHQ", "--no-download")
    assert kaggle.requests == []

    # The module itself never needs kagglehub: import and use it in a Python without it.
    code = ("import sys, argparse; sys.modules['kagglehub'] = None\n"
            "from common.download import *\n"
            "p = argparse.ArgumentParser(); add_download_argument(p)\n"
            "d = KaggleDataset('X', 'o/x', 1, 1, Folder(images=True))\n"
            "print(p.parse_args(['--no-download']).download, "
            "describe(resolve_data_dir('common', None, d)[1]))\n")  # An existing folder.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "False data: folder common"


def test_the_download_flag(kaggle):
    import argparse

    parser = argparse.ArgumentParser()
    add_download_argument(parser)
    assert parser.parse_args([]).download is True
    assert parser.parse_args(["--no-download"]).download is False
    assert "KAGGLEHUB_CACHE" in parser.format_help()


# --- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_while_downloading_leaves_no_dataset_and_the_next_run_resumes(kaggle, tmp_path):
    kaggle.archives[key(ANIMALS)] = make_zip(AFHQ_LAYOUT, padding_bytes=3 << 20)
    kaggle.mode = "interrupt"  # Sends most of the zip, then SIGINT to this thread.
    kaggle.interrupt_when = lambda: (archive(ANIMALS).is_file()  # Let kagglehub write
                                     and archive(ANIMALS).stat().st_size >= 1 << 20)  # some.
    with pytest.raises(KeyboardInterrupt) as stop:
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert "AFHQ" in str(stop.value) and "interrupted" in str(stop.value)
    assert no_dataset_left(ANIMALS)
    with pytest.raises(ValueError):  # A later run does not take anything for the dataset.
        resolve_data_dir(None, tmp_path / "missing", ANIMALS, download=False)

    kaggle.mode = "normal"
    folder, _ = resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert folder == unpacked(ANIMALS) / "afhq" / "train"
    assert len(list(folder.rglob("*.jpg"))) == 6
    ranges = [headers.get("Range") for method, _, headers, _ in kaggle.requests
              if method == "GET" and headers.get("Range")]
    assert ranges and int(ranges[0].split("=")[1].rstrip("-")) >= 1 << 20  # Resumed.


def test_ctrl_c_while_unpacking_leaves_no_half_folder(kaggle, tmp_path, monkeypatch):
    import kagglehub.http_resolver as resolver

    extract = resolver._extract_archive

    def extract_then_ctrl_c(archive_path, out_path):  # Every file out, no marker yet.
        extract(archive_path, out_path)
        raise KeyboardInterrupt

    monkeypatch.setattr(resolver, "_extract_archive", extract_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert no_dataset_left(ANIMALS)
    with pytest.raises(ValueError):
        resolve_data_dir(None, tmp_path / "missing", ANIMALS, download=False)

    monkeypatch.setattr(resolver, "_extract_archive", extract)
    folder, _ = resolve_data_dir(None, tmp_path / "missing", ANIMALS)
    assert folder == unpacked(ANIMALS) / "afhq" / "train"


# --- The scripts: the first command works on a fresh machine -----------------------------

SCRIPT_LAYOUTS = {"train_animals.py": AFHQ_LAYOUT, "train_faces.py": CELEBA_LAYOUT,
                  "train_artworks.py": ARTWORKS_LAYOUT}


def run_in(folder, script, *flags, **environment):
    """`python script flags` in a process of its own from `folder` (where the script's
    default data folder is missing), with this test's fake Kaggle and cache in the
    environment: the first lines a user sees on a fresh machine."""
    return process_server().run(
        [ROOT / script, "--batch-size", "2", "--max-steps", "1", *flags], cwd=folder,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1",
             **environment})


@pytest.mark.parametrize("script", sorted(SCRIPT_LAYOUTS))
def test_a_script_downloads_its_pinned_dataset_trains_and_then_trains_offline(
        kaggle, tmp_path, script, monkeypatch):
    import importlib
    import json

    spec = importlib.import_module(script[:-3]).KAGGLE  # The script's own pinned version.
    kaggle.archives[key(spec)] = make_zip(SCRIPT_LAYOUTS[script])
    first = run_in(tmp_path, script, "--out-dir", tmp_path / "first")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"Downloading {spec.name}: Kaggle dataset {spec.handle} "
                               f"version {spec.version}"), first.stdout
    said = f"data: Kaggle dataset {spec.handle} version {spec.version}, cached at "
    origin_line = next((line for line in lines if line.startswith(said)), None)
    assert origin_line, first.stdout  # After kagglehub's own lines, where the data is.
    assert (tmp_path / "first" / "generator.keras").is_file()
    source = json.loads((tmp_path / "first" / "args.json").read_text())["data_source"]
    assert (source["handle"], source["version"]) == (spec.handle, spec.version)
    assert Path(source["folder"]).is_relative_to(unpacked(spec))
    assert len(kaggle.api_calls()) == 1

    # The rest in this process, as a notebook cell runs it, from the same folder.
    monkeypatch.chdir(tmp_path)
    kaggle.stop()  # Offline now: the second run finds the cache and trains.
    second = run_main(script, "--batch-size", "2", "--max-steps", "1", "--out-dir",
                      tmp_path / "second")
    assert second.stdout.splitlines()[0] == origin_line  # No download this time.
    assert (tmp_path / "second" / "generator.keras").is_file()

    # --no-download on a machine without the cache, the default folder or --data-dir: one
    # line, and no run.
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty_cache"))
    refused = run_main(script, "--batch-size", "2", "--max-steps", "1", "--out-dir",
                       tmp_path / "third", "--no-download", check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "--data-dir" in refused.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "third").exists()


def test_the_kagglehub_and_requests_parts_the_download_leans_on_are_still_there(
        tmp_path, monkeypatch):
    """common/download.py uses kagglehub's Cache (not its public API) to find a pinned copy
    without the network, and wraps requests' HTTPAdapter.send to give kagglehub's calls a
    timeout: after an upgrade that moves either, this fails before a user's download does."""
    import inspect

    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle
    from requests.adapters import HTTPAdapter

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    cache, handle = Cache(), parse_dataset_handle("owner/name/versions/3")
    folder = tmp_path / "datasets" / "owner" / "name"
    assert Path(cache.get_path(handle)) == folder / "versions" / "3"
    assert Path(cache.get_archive_path(handle)) == folder / "3.archive"
    assert cache.load_from_cache(handle) is None  # Nothing cached: None, not an error.
    assert "timeout" in inspect.signature(HTTPAdapter.send).parameters
