"""Where a 64x64 script's images come from: the user's folder, or a pinned Kaggle download.

`resolve_data_dir` picks, in this order:

1. `--data-dir`, when the user gave one: used as is, never replaced by a download;
2. the script's default folder, when it exists;
3. the dataset from Kaggle, via `kagglehub.dataset_download`, into kagglehub's cache
   (`~/.cache/kagglehub`, or `$KAGGLEHUB_CACHE`), where Colab and every later run find it.

The download is PINNED to one version ("owner/name/versions/N"): kagglehub then looks in
its cache before asking the server anything, so a second run works offline, and the data
cannot change under a run. An unpinned handle asks Kaggle for the current version first,
and fails without a network even when the files are on disk.

Inside the download the images are found by STRUCTURE (`Folder`: "a folder holding
subfolders cat, dog and wild"), not by one hard-coded path, so a re-packed archive with
an extra top folder still works.

Every failure is a `ValueError` with one line that names the dataset and what to do.
Nothing here knows a dataset by name: each script passes its own `KaggleDataset`.
kagglehub is imported only when a download is needed, so everything else works without it.
"""

from __future__ import annotations  # `str | None` in the dataclasses below, on Python 3.9

import argparse
import contextlib
import errno
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from common.errors import one_line
from common.images import IMAGE_EXTENSIONS

# Seconds a download may go without receiving a byte before it counts as stalled.
# kagglehub 1.0.3 sets no timeout on its API requests nor on the archive transfer,
# so without one a dead connection hangs a run forever.
TIMEOUT_ENV_VAR = "DCGAN_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Folder:
    """How to recognise the training folder inside a download, by what it holds.

    named:   the folder's own name must be this (e.g. "img_align_celeba").
    holding: it must hold subfolders with all of these names, each with images somewhere
             below (e.g. ("cat", "dog", "wild")).
    images:  it must hold image files directly.
    prefer:  when several folders match, take one whose path has all of these parts
             (e.g. ("train",) picks afhq/train over afhq/val); then the shallowest.
    """

    named: str | None = None
    holding: tuple = ()
    images: bool = False
    prefer: tuple = ()

    def describe(self):
        """The rule in words, for messages: 'a folder named X holding subfolders a and b'."""
        words = ["a folder"]
        if self.named:
            words.append(f"named {self.named}")
        if self.holding:
            names = list(self.holding)
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            words.append(f"holding subfolder{'s' if len(names) > 1 else ''} {listed}")
        if self.images:
            words.append(("and " if self.holding else "") + "holding image files")
        return " ".join(words)

    def matches(self, path, subfolders, files):
        """Whether the folder at `path`, which lists `subfolders` and `files`, fits the rule."""
        if self.named and path.name != self.named:
            return False
        if self.images and not any(_is_image(name) for name in files):
            return False
        # A held subfolder must contain images: a name alone could be an empty shell.
        return all(name in subfolders and _has_image(path / name) for name in self.holding)


@dataclass(frozen=True)
class KaggleDataset:
    """One Kaggle dataset, pinned: what a script passes to `resolve_data_dir`.

    name:       what messages call it, e.g. "AFHQ".
    handle:     "owner/dataset" on Kaggle.
    version:    the version to download; pinned so the cache is used without asking Kaggle.
    size_bytes: the download's size, to check for free space before starting.
    find:       a `Folder` rule for the training folder inside the download.
    """

    name: str
    handle: str
    version: int
    size_bytes: int
    find: Folder

    @property
    def pinned_handle(self):
        return f"{self.handle}/versions/{self.version}"

    @property
    def url(self):
        return f"https://www.kaggle.com/datasets/{self.handle}"

    def describe(self):
        return f"Kaggle dataset {self.handle} version {self.version} ({_size(self.size_bytes)})"


def add_download_argument(parser):
    """Add --download / --no-download (default: download) to an argparse parser."""
    parser.add_argument(
        "--download", action=argparse.BooleanOptionalAction, default=True,
        help="when --data-dir is not given and the default folder is missing, download the "
             "dataset from Kaggle once into kagglehub's cache (~/.cache/kagglehub, or "
             "$KAGGLEHUB_CACHE) and reuse it in later runs; --no-download never downloads, "
             "but still uses a copy already in that cache (default: %(default)s)")


def describe(origin):
    """The run's first line, from the origin `resolve_data_dir` returned."""
    if origin["source"] == "kaggle":
        return (f"data: Kaggle dataset {origin['handle']} version {origin['version']}, "
                f"cached at {origin['folder']}")
    return f"data: folder {origin['folder']}"


def resolve_data_dir(data_dir, default_dir, dataset, download=True, timeout=None):
    """The folder to train on, and a JSON-able record of where it came from.

    data_dir:    the user's --data-dir, or None when not given.
    default_dir: the script's usual folder (e.g. data/afhq/train), or None.
    dataset:     the `KaggleDataset` to fall back on.
    download:    False (--no-download) uses only folders and kagglehub's cache.
    timeout:     seconds without data before a download counts as stalled (default:
                 $DCGAN_DOWNLOAD_TIMEOUT, else 60).

    Returns (folder: Path, origin: dict); `describe(origin)` words it for the log.
    Raises ValueError (one line) when there is no folder and no download gives one.
    Ctrl-C during a download removes the half-unpacked folder and raises KeyboardInterrupt
    whose message says so; a partial archive is kept, and the next run resumes it.
    """
    if data_dir is not None:  # The user's choice wins, whatever it holds.
        if not Path(data_dir).is_dir():
            state = "is a file, not a folder" if Path(data_dir).exists() else "does not exist"
            raise ValueError(f"--data-dir {data_dir} {state}; point it at the {dataset.name} "
                             f"images (a folder), or leave it out to use or download "
                             f"{dataset.handle}")
        return Path(data_dir), _origin({"source": "folder", "folder": str(data_dir)})
    if default_dir is not None and Path(default_dir).is_dir():
        return Path(default_dir), _origin({"source": "folder", "folder": str(default_dir)})

    where = f"{default_dir} does not exist" if default_dir is not None else "no --data-dir"
    kagglehub = _import_kagglehub()
    if kagglehub is None:
        if not download:
            raise ValueError(_no_download_message(dataset, where))
        raise ValueError(f"{dataset.name}: {where}, and downloading it needs kagglehub: "
                         f"pip install 'kagglehub>=1.0,<2' (Python 3.11+), or pass "
                         f"--data-dir FOLDER with the dataset from {dataset.url}")

    cache, handle = _cache_and_handle(dataset)
    root = cache.load_from_cache(handle)  # A complete pinned copy: no network needed.
    if root is None:
        if not download:
            raise ValueError(_no_download_message(dataset, where))
        root = _download(kagglehub, dataset, cache, handle, timeout)

    folder = find_folder(root, dataset.find)
    if folder is None:
        raise ValueError(f"{dataset.name}: the download at {root} has no "
                         f"{dataset.find.describe()}; its layout may have changed: pass "
                         f"--data-dir FOLDER pointing at the images, or delete {root} and "
                         f"run again")
    return folder, _origin({"source": "kaggle", "dataset": dataset.name,
                            "handle": dataset.handle, "version": dataset.version,
                            "folder": str(folder)})


def _origin(record):
    """The record with its one-line description, which a run prints first."""
    return {**record, "description": describe(record)}



def find_folder(root, rule):
    """The folder under `root` (itself included) that fits the `Folder` rule, or None.

    Among several, the one whose path has all of `rule.prefer`'s parts, then the
    shallowest, then the first by name. Symlinked folders are not followed.
    """
    root = Path(root)
    found = []
    for path, subfolders, files in os.walk(root):
        path = Path(path)
        if rule.matches(path, set(subfolders), files):
            parts = {part.lower() for part in path.relative_to(root).parts}
            preferred = all(part.lower() in parts for part in rule.prefer)
            found.append((not preferred, len(path.relative_to(root).parts), str(path)))
    return Path(min(found)[2]) if found else None


# --- The download --------------------------------------------------------------------------


def _download(kagglehub, dataset, cache, handle, timeout):
    """Download and unpack the pinned dataset with kagglehub; returns the unpacked folder.

    kagglehub stages a download as <cache>/datasets/<owner>/<name>/<N>.archive, unpacks it
    to .../versions/<N>/, deletes the archive and only then writes the marker <N>.complete.
    A folder without that marker is unfinished: on any failure it is removed here, so no
    half folder is left for anyone to mistake for the dataset. The archive is kept when
    the next run can resume it (kagglehub continues a partial archive with a Range
    request) and deleted when it is corrupt or the disk is full.
    """
    from kagglehub.config import get_cache_folder

    unpacked = Path(cache.get_path(handle))
    archive = Path(cache.get_archive_path(handle))
    cache_root = Path(get_cache_folder())
    _check_free_space(dataset, cache_root, archive)
    seconds = _timeout_seconds(timeout)
    print(f"Downloading {dataset.name}: {dataset.describe()} into {cache_root} "
          f"(once; later runs reuse it)", flush=True)

    def remove_unfinished(also_archive):
        if cache.load_from_cache(handle) is None:  # Never remove a completed copy.
            shutil.rmtree(unpacked, ignore_errors=True)
            if also_archive:
                with contextlib.suppress(FileNotFoundError):
                    archive.unlink()

    try:
        with _requests_timeout(seconds):
            return Path(kagglehub.dataset_download(dataset.pinned_handle))
    except KeyboardInterrupt:
        remove_unfinished(also_archive=False)
        partial = (f"; the partial download {archive} is kept and the next run resumes it "
                   f"(delete it to start over)" if archive.exists() else "")
        raise KeyboardInterrupt(f"{dataset.name}: download interrupted, nothing unpacked is "
                                f"left behind{partial}") from None
    except Exception as error:  # noqa: BLE001 - every failure becomes one line
        message, corrupt = _explain(error, dataset, cache_root, archive, seconds)
        remove_unfinished(also_archive=corrupt)
        raise ValueError(message) from error


def _explain(error, dataset, cache_root, archive, seconds):
    """One line saying what went wrong and what to do; and whether the archive is unusable."""
    import requests
    import urllib3
    from kagglehub.exceptions import DataCorruptionError

    name, instead = dataset.name, "or pass --data-dir FOLDER"
    retry = f"run again to resume it, {instead}"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return (f"{name}: the disk holding {cache_root} is full; it needs about "
                f"{_size(2 * dataset.size_bytes)} free: free some space or set KAGGLEHUB_CACHE "
                f"to a folder on a bigger disk, {instead}"), True
    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return (f"{name}: Kaggle refused the download (HTTP {status}): sign in by setting "
                    f"KAGGLE_USERNAME and KAGGLE_KEY, or saving kaggle.json (from kaggle.com > "
                    f"Settings > API) in ~/.kaggle/, or running kagglehub.login() in a "
                    f"notebook, and accept the dataset's terms at {dataset.url} if it has "
                    f"any; {instead}"), False
        if status == 404:
            return (f"{name}: Kaggle has no {dataset.pinned_handle} (HTTP 404): the dataset "
                    f"or that version may have been removed; see {dataset.url}, {instead}"), False
        return (f"{name}: Kaggle answered HTTP {status}; try again later, {instead}"), False
    stalled = isinstance(error, requests.ReadTimeout) or (
        isinstance(error, requests.ConnectionError) and error.args
        and isinstance(error.args[0], urllib3.exceptions.ReadTimeoutError))
    if stalled:
        return (f"{name}: the download stalled (no data for {seconds:g} s, see "
                f"{TIMEOUT_ENV_VAR}); check the connection and {retry}"), False
    if isinstance(error, requests.ConnectionError):
        return (f"{name}: cannot reach Kaggle (no network?): connect and run again, or "
                f"download {dataset.url} yourself and pass --data-dir FOLDER"), False
    if isinstance(error, (requests.exceptions.ChunkedEncodingError,
                          urllib3.exceptions.ProtocolError)):
        return f"{name}: the download broke off before the end; {retry}", False
    unsupported = isinstance(error, ValueError) and "archive" in str(error)  # kagglehub 1.0.3
    if isinstance(error, (DataCorruptionError, zipfile.BadZipFile, tarfile.TarError, EOFError)) \
            or unsupported:
        return (f"{name}: the download was corrupt ({one_line(error, 160)}); it was deleted: run "
                f"again to download it afresh (if it repeats, delete {archive.parent}), "
                f"{instead}"), True
    if isinstance(error, OSError):
        return (f"{name}: cannot write the download under {cache_root} ({one_line(error, 160)}): "
                f"set KAGGLEHUB_CACHE to a writable folder, {instead}"), False
    return (f"{name}: the download failed ({type(error).__name__}: {one_line(error, 160)}); "
            f"{retry}"), False


def _check_free_space(dataset, cache_root, archive):
    """Refuse before downloading when the disk cannot hold the archive and its unpacked copy.

    Both exist at once until kagglehub deletes the archive; the part of the archive already
    on disk (from an interrupted run) counts as space taken.
    """
    existing = cache_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    have = archive.stat().st_size if archive.is_file() else 0
    needed = 2 * dataset.size_bytes - have
    if free < needed:
        raise ValueError(f"{dataset.name}: downloading it into {cache_root} needs about "
                         f"{_size(needed)} free (the {_size(dataset.size_bytes)} download and "
                         f"its unpacked copy) but that disk has {_size(free)}: free some space "
                         f"or set KAGGLEHUB_CACHE to a folder on a bigger disk, or pass "
                         f"--data-dir FOLDER")


@contextlib.contextmanager
def _requests_timeout(seconds):
    """Give every `requests` call made inside this block without a timeout one of `seconds`.

    kagglehub (through kagglesdk's session) sends its API request and streams the archive
    with no timeout at all, and a socket default timeout does not help: requests passes an
    explicit "no timeout" down to each socket. So the transport method every Session uses
    is wrapped for the duration of the download, then restored. The timeout applies to
    connecting and to each wait for data, not to the whole transfer, so a slow but live
    download is never cut. Calls that set their own timeout keep it.
    """
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.send

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (seconds, seconds)
        return original(self, request, **kwargs)

    HTTPAdapter.send = send
    try:
        yield
    finally:
        HTTPAdapter.send = original


# --- Small helpers ------------------------------------------------------------------------


def _import_kagglehub():
    """kagglehub 1.x, or None when it is not installed (or too old to have its Cache)."""
    try:
        import kagglehub
        from kagglehub.cache import Cache  # noqa: F401 - 1.0's cache API, used below
    except ImportError:
        return None
    return kagglehub


def _cache_and_handle(dataset):
    """kagglehub's cache (where a pinned copy would be, found without the network) and the
    dataset's parsed handle. Cache is not kagglehub's public API; it is made only here and
    used for get_path, get_archive_path and load_from_cache. test_download checks that those,
    and the requests method _requests_timeout wraps, are still there."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    return Cache(), parse_dataset_handle(dataset.pinned_handle)


def _no_download_message(dataset, where):
    return (f"{dataset.name}: {where} and --no-download is set: put the dataset there, "
            f"pass --data-dir FOLDER, or drop --no-download to fetch the "
            f"{dataset.describe()} from {dataset.url}")


def _timeout_seconds(timeout):
    if timeout is not None:
        return float(timeout)
    text = os.environ.get(TIMEOUT_ENV_VAR, "")
    try:
        return float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV_VAR}={text!r} is not a number of seconds") from None


def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _has_image(folder):
    """Whether any image file lies somewhere under `folder` (stops at the first)."""
    return any(any(_is_image(name) for name in files) for _, _, files in os.walk(folder))


def _size(size_bytes):
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes / 1e3:.1f} kB"
