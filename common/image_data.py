"""From image folders to training batches: what every 64x64 script's data goes through.

`read_image_folders` gives every readable image of some folders as one uint8 array (decoded
once, cached on disk with --cache-dir) and a record of where it came from; `image_batches`
feeds shuffled batches in [-1, 1] from that array: no epoch decodes a JPEG again, and no
float32 copy of the whole set ever exists.
"""

import os
from pathlib import Path

import numpy as np

from common.image_cache import load_images
from common.images import IMAGE_EXTENSIONS, describe_skipped, find_images


def read_image_folders(folders, size=64, crop=1.0, cache_dir=None, name="images"):
    """Every readable image under `folders` (searched recursively) as uint8 (N, size, size,
    3), decoded once, and a record of where it came from (JSON, kept in args.json, from
    which common.evaluate reads the same images again). Prints a line for skipped files;
    ValueError when no image is readable."""
    folders = [Path(folder) for folder in folders]
    paths = [path for folder in folders for path in find_images(folder)]
    root = os.path.commonpath([str(folder) for folder in folders])
    pixels, skipped, where = load_images(paths, size, crop=crop, cache_dir=cache_dir,
                                         root=root, name=name)
    if len(pixels) == 0:
        raise ValueError(f"{' and '.join(map(str, folders))} has no readable images "
                         f"({len(paths)} files with the extensions "
                         f"{' '.join(IMAGE_EXTENSIONS)})")
    if skipped:
        print(describe_skipped(skipped, len(pixels) + len(skipped)))
    return pixels, {"folders": [str(folder) for folder in folders], "size": size,
                    "crop": crop, "cache_dir": cache_dir, "name": name, "where": where,
                    "description": f"data: {' + '.join(map(str, folders))}",
                    "images": f"{' + '.join(folder.name for folder in folders)} ({where})"}


def read_source(source):
    """The images a `read_image_folders` record (from args.json) describes, read again."""
    return read_image_folders(source["folders"], source["size"], source["crop"],
                              source.get("cache_dir"), source.get("name", "images"))[0]


def image_batches(pixels, batch_size, seed, flip=False):
    """Endless shuffled batches of images in [-1, 1] from uint8 pixels (N, H, W, C).

    Nothing is decoded again: the data set holds only indices, and each batch gathers its
    rows from the uint8 array (or its memory map on disk), so no float32 copy of the whole
    set exists. Each epoch reshuffles; the last batch of an epoch may be smaller.
    """
    import tensorflow as tf  # Here: reading folders (common.evaluate) needs no TensorFlow.

    def gather(indices):
        return pixels[np.sort(indices)]  # Sorted reads are kinder to a memory map on disk.

    def to_float(batch):
        batch = tf.ensure_shape(batch, (None, *pixels.shape[1:]))
        batch = tf.cast(batch, tf.float32) / 127.5 - 1.0
        return tf.image.random_flip_left_right(batch, seed=seed) if flip else batch

    return (
        tf.data.Dataset.range(len(pixels))
        .shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda indices: tf.numpy_function(gather, [indices], tf.uint8),
             num_parallel_calls=tf.data.AUTOTUNE)
        .map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
    )
