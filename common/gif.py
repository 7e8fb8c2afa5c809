"""The progress GIF of a run: at most `max_frames` of its sample grids, the newest last.

A run samples up to hundreds of epochs. The GIF shows at most `max_frames` of them, chosen
by `gif_frames`; `ProgressGif` reads and palette-quantizes each shown sample once and keeps
it LZW-encoded in memory, so rewriting the GIF after an epoch costs one new frame plus
writing the file out, not re-encoding every frame so far. Written atomically
(`common.files.atomic_write`), so a viewer or a kill never sees a half-written file.
"""

import io
import os
import re
import struct
from pathlib import Path

import numpy as np

from common.files import atomic_write


GIF_FRAMES = 100  # Default most frames in progress.gif.
GIF_MAX_BYTES = 19_000_000  # Default size cap of progress.gif (see ProgressGif).
# Palette sizes tried, largest first, until a frame fits its share of the size cap.
GIF_COLORS = (256, 192, 128, 96, 64, 48, 32, 16, 8, 4, 2)
_GIF_HEADER_BYTES = 1024  # Room for the file header, loop block and global palette.


def gif_frames(epochs, max_frames=GIF_FRAMES):
    """Which of the sampled `epochs` the GIF shows: at most `max_frames`, evenly spread.

    The first and the newest epoch are always shown. Between them the GIF keeps every
    `stride`-th sample (by position in the sorted list), `stride` being the smallest power
    of two that fits, so as the run grows the stride only doubles, and frames drop out for
    good only then. The newest sample closes the GIF; when it sits less than half a stride
    after the last kept one, that one steps aside until the newest has moved on, so no gap
    is more than twice another.
    Depends only on the list and `max_frames`: the same samples give the same GIF after a
    kill or a resume. With up to `max_frames` samples every one is shown; past that the
    count lies between about max_frames / 2 and max_frames.
    """
    epochs = sorted(set(int(epoch) for epoch in epochs))
    return [epochs[index] for index in _frame_plan(len(epochs), max_frames)[1]]


def _frame_plan(count, max_frames):
    """(stride, positions shown) for `count` samples; see gif_frames."""
    if max_frames < 2:
        raise ValueError(f"a progress GIF needs max_frames >= 2 (first and newest), "
                         f"got {max_frames}")
    stride = 1
    while True:
        shown = list(range(0, count, stride))
        gap = count - 1 - shown[-1] if shown else 0
        if gap:
            if 2 * gap < stride and len(shown) > 1:
                shown.pop()  # Too close to the newest: the gap grows to under 1.5 strides.
            shown.append(count - 1)
        if len(shown) <= max_frames:
            return stride, shown
        stride *= 2


class ProgressGif:
    """The progress GIF of a run, cheap to write again after every epoch.

        gif = ProgressGif(out_dir / "progress.gif")
        gif.rebuild_from(sample_paths(out_dir, epochs_done))  # resume: what is on disk
        ...
        gif.add(epoch, grid)   # a sample grid: uint8 array, PIL image or PNG path
        gif.write()            # atomic; the newest frame lingers

    Each frame is read and palette-quantized once (when first written, or when a newer
    sample arrives and it stays on) and kept LZW-encoded (at most max_frames + 1 of them);
    the samples `gif_frames` will never show again are forgotten, so a newest sample
    replaced before any write is never encoded. Each frame gets its own adaptive palette
    (a GAN's early and late samples share few colours), no dithering, and as many colours
    as fit its share of `max_bytes` (max_bytes / max_frames), so the file stays under
    `max_bytes` (None: no cap) at any run length; noisy early samples get fewer colours.
    Frames from PNG paths are remembered by path, modification time and size, so
    `rebuild_from` the same files again reads none of them again.
    """

    def __init__(self, path, max_frames=GIF_FRAMES, seconds_per_frame=0.25,
                 max_bytes=GIF_MAX_BYTES):
        _frame_plan(0, max_frames)  # Checks max_frames.
        self.path = Path(path)
        self.max_frames = int(max_frames)
        self.seconds_per_frame = seconds_per_frame
        self.frame_budget = (None if max_bytes is None
                             else max(1, (max_bytes - _GIF_HEADER_BYTES) // self.max_frames))
        self._epochs = []  # Every sampled epoch, oldest first.
        self._sources = {}  # epoch -> path or pixels, read when first shown.
        self._frames = {}  # epoch -> _GifFrame, encoded.
        self._stamps = {}  # epoch -> (path, mtime, size) of the PNG its frame was read from.

    @property
    def epochs(self):
        """Every sampled epoch so far, oldest first."""
        return list(self._epochs)

    def shown(self):
        """The epochs the GIF shows now, oldest first."""
        return gif_frames(self._epochs, self.max_frames)

    def add(self, epoch, frame):
        """Add (or replace) the sample grid of `epoch`, the newest or an earlier one again.

        `frame` is a uint8 array, (H, W) or (H, W, 3), a PIL image or an image path.
        """
        epoch = int(epoch)
        if epoch not in self._epochs:
            if self._epochs and epoch < self._epochs[-1]:
                raise ValueError(f"epoch {epoch} comes before the newest sample "
                                 f"({self._epochs[-1]}); use rebuild_from for a new history")
            self._epochs.append(epoch)
        self._frames.pop(epoch, None)
        self._stamps.pop(epoch, None)
        self._sources[epoch] = frame if isinstance(frame, (str, os.PathLike)) else _as_image(frame)
        self._forget()
        # Pixels held for a sample that stayed on (no longer the newest: so it is one the
        # GIF shows for a while) are encoded now, so at most one raw grid waits in memory.
        for held in [held for held, source in self._sources.items()
                     if held != epoch and not isinstance(source, (str, os.PathLike))]:
            self._frame(held)

    def rebuild_from(self, sample_paths):
        """Start again from sample PNGs on disk: paths named like epoch_0007.png, or
        (epoch, path) pairs. Frames already held for unchanged files are reused; call
        `write` to make the file match."""
        pairs = sorted((item if isinstance(item, tuple) else (_epoch_of(item), item)
                        for item in sample_paths), key=lambda pair: int(pair[0]))
        epochs = [int(epoch) for epoch, _ in pairs]
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"two samples for one epoch in {[str(p) for _, p in pairs]}")
        self._epochs = epochs
        paths = dict(zip(epochs, (Path(path) for _, path in pairs)))
        for epoch in self._keep():
            stamp = _stamp(paths[epoch])
            if not (epoch in self._frames and self._stamps.get(epoch) == stamp):
                self._frames.pop(epoch, None)
                self._stamps.pop(epoch, None)
                self._sources[epoch] = paths[epoch]
        self._forget()
        return self

    def write(self):
        """Write the GIF to `path` atomically (no file while no sample has been added)."""
        frames = [self._frame(epoch) for epoch in self.shown()]
        if frames:
            data = _gif_bytes(frames, self.seconds_per_frame)
            atomic_write(self.path, lambda temporary: _write_chunks(temporary, data))

    def _keep(self):
        # What may be shown now or later: every stride-th sample, and the newest.
        stride, _ = _frame_plan(len(self._epochs), self.max_frames)
        keep = self._epochs[::stride]
        return keep + self._epochs[-1:] if self._epochs else keep

    def _forget(self):
        keep = set(self._keep())
        for held in (self._sources, self._frames, self._stamps):
            for epoch in [epoch for epoch in held if epoch not in keep]:
                del held[epoch]

    def _frame(self, epoch):
        if epoch not in self._frames:
            source = self._sources.pop(epoch)
            if isinstance(source, (str, os.PathLike)):
                stamp = _stamp(source)  # Before reading: a newer file then reads again.
                source = _as_image(source)
                self._stamps[epoch] = stamp
            self._frames[epoch] = _encode_frame(source, self.frame_budget)
        return self._frames[epoch]


def write_gif(frame_paths, path, seconds_per_frame=0.25, max_frames=GIF_FRAMES,
              max_bytes=GIF_MAX_BYTES):
    """Write the sample PNGs `frame_paths` (oldest first) as one looping GIF at `path`.

    At most `max_frames` of them, chosen by `gif_frames`; the newest frame lingers. Rebuilt
    from the files each call, so it always matches the samples on disk, also after a kill
    or a resume; frames are quantized once per process (a `ProgressGif` per `path` is
    kept), so calling it after every epoch is cheap.
    """
    key = (str(Path(path).resolve()), max_frames, seconds_per_frame, max_bytes)
    gif = _gifs.pop(key, None) or ProgressGif(path, max_frames, seconds_per_frame, max_bytes)
    _gifs[key] = gif  # Most recently used last.
    while len(_gifs) > 4:
        del _gifs[next(iter(_gifs))]
    gif.rebuild_from(list(enumerate(frame_paths, start=1))).write()


_gifs = {}


class _GifFrame:
    """One frame as GIF blocks: size, interlace flag, colour table and LZW data."""

    __slots__ = ("width", "height", "flags", "table", "data")

    def __init__(self, width, height, flags, table, data):
        self.width, self.height, self.flags, self.table, self.data = (
            width, height, flags, table, data)

    def __len__(self):  # Bytes it adds to a GIF: control block, descriptor, table, data.
        return 8 + 10 + len(self.table) + len(self.data)


def _as_image(frame):
    from PIL import Image

    if isinstance(frame, (str, os.PathLike)):
        with Image.open(frame) as opened:
            frame = opened.copy()
    elif not isinstance(frame, Image.Image):
        pixels = np.asarray(frame)
        if pixels.dtype != np.uint8:
            raise ValueError(f"a GIF frame must be uint8 pixels, got {pixels.dtype}")
        frame = Image.fromarray(np.array(  # A copy: the caller may reuse its array.
            pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels))
    return frame if frame.mode in ("L", "RGB") else frame.convert(
        "L" if frame.mode in ("1", "I", "I;16", "F") else "RGB")


def _encode_frame(image, budget):
    """The most colours (GIF_COLORS) whose encoded frame fits `budget` bytes, else the fewest.

    Grayscale frames first try their own 256 grays, which is exact."""
    from PIL import Image

    frame = None
    for colors in GIF_COLORS:
        if image.mode == "L":
            quantized = image if colors == 256 else image.quantize(colors)
        else:  # Octree palette, then each pixel its nearest colour: sharper than the
            # octree's own mapping and 20x faster than median cut (benchmarks/epoch_close.py).
            palette = image.quantize(colors, method=Image.Quantize.FASTOCTREE)
            quantized = image.quantize(palette=palette, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        quantized.save(buffer, format="GIF", interlace=False)
        frame = _parse_gif_frame(buffer.getvalue())
        if budget is None or len(frame) <= budget:
            break
    return frame


def _parse_gif_frame(data):
    """The first image of a GIF file (as Pillow writes one frame) as a _GifFrame."""
    flags = data[10]
    position = 13
    table = b""
    if flags & 0x80:  # Global colour table.
        position += 3 << ((flags & 7) + 1)
        table = data[13:position]
    while data[position] == 0x21:  # Extension blocks: skip their sub-blocks.
        position += 2
        while data[position]:
            position += data[position] + 1
        position += 1
    if data[position] != 0x2C:
        raise ValueError("not a GIF image block")
    left, top, width, height, image_flags = struct.unpack_from("<HHHHB", data, position + 1)
    position += 10
    if image_flags & 0x80:  # Local colour table.
        end = position + (3 << ((image_flags & 7) + 1))
        table, position = data[position:end], end
    start = position
    position += 1  # LZW minimum code size, then sub-blocks up to an empty one.
    while data[position]:
        position += data[position] + 1
    return _GifFrame(width, height, image_flags & 0x40, table, data[start : position + 1])


# Why a GIF writer of our own (40 lines) and not imageio's or Pillow's multi-frame writer
# (benchmarks/gif_writer.py, 2026-12-03): Pillow encodes every frame again at each write
# (about 0.7 s for 100 frames against 7 ms for these kept frames) and merges two identical
# frames into one, so the GIF would no longer hold one frame per sample shown.
def _gif_bytes(frames, seconds_per_frame):
    """The pieces of a looping GIF of `frames`, each with its own colour table."""
    width = max(frame.width for frame in frames)
    height = max(frame.height for frame in frames)
    first = frames[0].table  # Also the global table, for readers that want one.
    bits = (len(first) // 3).bit_length() - 1  # A table holds 2**bits colours.
    chunks = [b"GIF89a", struct.pack("<HHBBB", width, height, 0x80 | 0x70 | (bits - 1), 0, 0),
              first, b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"]  # Loop forever.
    delay = max(2, round(seconds_per_frame * 100))  # GIF delays are in 1/100 s.
    for index, frame in enumerate(frames):
        # Hold the newest frame four times longer so a viewer sees where training stands.
        frame_delay = delay * 4 if index == len(frames) - 1 else delay
        bits = (len(frame.table) // 3).bit_length() - 1
        chunks += [struct.pack("<BBBBHBB", 0x21, 0xF9, 4, 1 << 2, frame_delay, 0, 0),
                   struct.pack("<BHHHHB", 0x2C, 0, 0, frame.width, frame.height,
                               0x80 | frame.flags | (bits - 1)),
                   frame.table, frame.data]
    chunks.append(b"\x3b")
    return chunks


def _write_chunks(path, chunks):
    with open(path, "wb") as file:
        for chunk in chunks:
            file.write(chunk)


def _epoch_of(path):
    match = re.search(r"(\d+)$", Path(path).stem)
    if not match:
        raise ValueError(f"{path}: a sample's name must end in its epoch, like epoch_0007.png")
    return int(match.group(1))


def _stamp(path):
    status = os.stat(path)
    return str(path), status.st_mtime_ns, status.st_size
