"""Shared test helpers: run a script as a user would, and make small idx datasets."""

import gzip
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FASHION_SAMPLE = ROOT / "tests" / "data" / "fashion_mnist"
sys.path.insert(0, str(ROOT))  # So tests can import the scripts and common/.

# Quiet TensorFlow's start-up logging in the subprocesses; errors still show.
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_in_a_terminal():
    """A CI runner or `nohup ... &` may start the tests with SIGINT ignored or blocked, and
    child processes inherit that; a user's terminal never does. The Ctrl-C tests need it
    live, here and in the scripts they start."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_script(script, *args, check=True, timeout=600):
    """Run ROOT/script with args in a fresh Python, as `python script ...` would."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)],
                            capture_output=True, text=True, env=ENV, timeout=timeout,
                            cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def refused(script, *argv, capsys, status=None):
    """Call the script's main() in this process, as a notebook cell would (no new Python and
    TensorFlow start for each case), and return the one line it stopped with."""
    import importlib

    import keras
    from common import rundir
    module = importlib.import_module(script[:-3])
    policy = keras.mixed_precision.global_policy()  # A run's set-up changes it; put it back.
    try:
        with pytest.raises(SystemExit) as stop:
            module.main([str(value) for value in argv])
    finally:  # Let later processes use the folder: a refused run holds its lock no longer.
        while rundir._locks:
            rundir._locks.popitem()[1].close()
        keras.mixed_precision.set_global_policy(policy)
    code = stop.value.code
    lines = [] if isinstance(code, str) or not code else capsys.readouterr().err.splitlines()
    message = code if isinstance(code, str) else (lines or [""])[-1]
    assert "\n" not in message.strip()
    if status is not None:
        assert (1 if isinstance(code, str) else code) == status
    return message


def snapshot(folder):
    """Every file under `folder` with its bytes: to prove a refused run changed nothing."""
    # Not .lock: any run that gets as far as the out-dir holds its lock file (an empty
    # file naming the process), refused or not.
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def optimizer_steps(out):
    """The generator optimizer's step count in the run's latest checkpoint."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(latest)
             if name.startswith("generator_optimizer/") and "iteration" in name]
    return int(tf.train.load_variable(latest, names[0]))


def generate_in_fresh_process(model_path, count, latent_dim, distribution="normal"):
    """Load generator.keras in a new Python, as a user would, and map `count` noise vectors
    through it. Returns (output shape as text, min, max)."""
    draw = ("normal(size=" if distribution == "normal" else "uniform(-1, 1, size=")
    code = (
        "import keras, numpy as np\n"
        f"g = keras.saving.load_model({str(model_path)!r})\n"
        f"z = np.random.default_rng(0).{draw}({count}, {latent_dim})).astype('float32')\n"
        "x = np.asarray(g(z))\n"
        "print(x.shape, float(x.min()), float(x.max()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=ENV, check=True)
    shape, low, high = result.stdout.strip().rsplit(" ", 2)
    return shape, float(low), float(high)


def copy_with_flipped_generator_loss(script, folder):
    """A copy of `script` and common/ in `folder` whose generator maximises its loss: the
    broken model every learning test must fail on. Returns the copy's root."""
    import shutil
    folder.mkdir()
    shutil.copy(ROOT / script, folder / script)
    shutil.copytree(ROOT / "common", folder / "common")
    losses = folder / "common" / "losses.py"
    text = losses.read_text()
    line = "return _bce_sum(fake_logits, 1.0) /"  # generator_loss's, and only it.
    assert text.count(line) == 1
    losses.write_text(text.replace(line, line.replace("return ", "return -")))
    return folder


def write_idx_images(path, images):
    """Write uint8 images (N, H, W) as an idx3 .gz file, the format Fashion-MNIST ships in."""
    images = np.asarray(images, np.uint8)
    header = struct.pack(">IIII", 2051, *images.shape)
    Path(path).write_bytes(gzip.compress(header + images.tobytes()))


@pytest.fixture(scope="session")
def sample_images():
    """The shipped real sample's 2,000 training images, uint8 (N, 28, 28)."""
    raw = gzip.decompress((FASHION_SAMPLE / "train-images-idx3-ubyte.gz").read_bytes())
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, sample_images):
    """200 real images: two steps an epoch at batch 128, the second a partial batch of 72."""
    folder = tmp_path_factory.mktemp("tiny_fashion")
    write_idx_images(folder / "train-images-idx3-ubyte.gz", sample_images[:200])
    return folder


def made_once(tmp_path_factory, name, make):
    """The folder `name`, filled by `make(folder)` once in the whole test session, also when
    pytest-xdist splits the session over workers (pytest.ini): the first worker to ask makes
    it, in the temporary folder the workers share and under a lock; the others wait for it
    and use the same folder. (A run of a script is worth sharing; a folder is cheap.)"""
    import fcntl
    import shutil
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/, above each worker's popen-gwN/.
    folder, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # What a failed attempt left.
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def fashion_sample_run(tmp_path_factory):
    """A one-step Fashion-MNIST run on the shipped 2,000-image sample, made once for every
    test that only reads a finished run (generate, evaluate, refused commands)."""
    return made_once(tmp_path_factory, "fashion_sample_run", lambda out: run_script(
        "train_fashion_mnist.py", "--data-dir", FASHION_SAMPLE, "--epochs", "1",
        "--max-steps", "1", "--out-dir", out))


# --- Image folders for the 64x64 scripts --------------------------------------------------


def shape_image(rng, width=64, height=64):
    """A bright disk or square of a primary color on black: simple, varied, structured."""
    image = np.zeros((height, width, 3), np.uint8)
    color = np.array([(255, 40, 40), (40, 255, 40), (40, 40, 255), (255, 255, 40)][
        rng.integers(4)], np.uint8)
    size = rng.integers(min(width, height) // 3, min(width, height) // 2 + 1)
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    if rng.random() < 0.5:
        image[top:top + size, left:left + size] = color
    else:
        rows, columns = np.ogrid[:height, :width]
        radius = size / 2
        inside = (rows - top - radius) ** 2 + (columns - left - radius) ** 2 <= radius ** 2
        image[inside] = color
    return image


def make_messy_folder(root, good_per_artist=10):
    """A folder laid out like the real sets, with every kind of file users meet.

    root/Rembrandt/ holds jpg, png, grayscale, RGBA, palette gif, bmp, webp, non-square
    and 1x1 images, plus a corrupt jpg, a zero-byte png, a truncated jpg and a .txt;
    root/Pablo_Picasso/nested/deeper/ holds pngs two folders down. Returns
    (good image count, the names of the three broken image files).
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    rembrandt = Path(root) / "Rembrandt"
    picasso = Path(root) / "Pablo_Picasso" / "nested" / "deeper"
    rembrandt.mkdir(parents=True)
    picasso.mkdir(parents=True)
    formats = [("a.jpg", "RGB"), ("b.png", "RGB"), ("c_gray.jpg", "L"), ("d_rgba.png", "RGBA"),
               ("e_palette.gif", "P"), ("f.bmp", "RGB"), ("g.webp", "RGB"),
               ("h_wide.jpeg", "RGB"), ("i_tall.PNG", "RGB")]
    count = 0
    for index in range(good_per_artist):
        name, mode = formats[index % len(formats)]
        width, height = (96, 48) if "wide" in name else (40, 90) if "tall" in name else (80, 80)
        image = Image.fromarray(shape_image(rng, width, height))
        if mode == "RGBA":
            image.putalpha(Image.fromarray(rng.integers(0, 256, (height, width), np.uint8)))
        elif mode != "RGB":
            image = image.convert(mode)
        image.save(rembrandt / f"{index:02d}_{name}")
        Image.fromarray(shape_image(rng)).save(picasso / f"{index:02d}.png")
        count += 2
    Image.new("RGB", (1, 1), (200, 10, 10)).save(rembrandt / "tiny_1x1.png")
    count += 1
    (rembrandt / "corrupt.jpg").write_bytes(rng.integers(0, 256, 2000, np.uint8).tobytes())
    (rembrandt / "empty.png").write_bytes(b"")
    whole = rembrandt / "00_a.jpg"
    (rembrandt / "truncated.jpg").write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    (rembrandt / "notes.txt").write_text("not an image")
    return count, ("corrupt.jpg", "empty.png", "truncated.jpg")


@pytest.fixture(scope="session")
def messy_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    good, broken = make_messy_folder(root)
    return root, good, broken


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory):
    """512 64x64 shape images: data a DCGAN learns visibly within a few dozen steps."""
    from PIL import Image

    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(1)
    pixels = np.stack([shape_image(rng) for _ in range(512)])
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(root / f"{index:03d}.png")
    return root, pixels


# --- Every script on quick data (issue 12: each survival behaviour on every script) -------

SCRIPTS = ("train_fashion_mnist.py", "train_faces.py", "train_animals.py", "train_artworks.py")
LATENT = {"train_fashion_mnist.py": 128, "train_faces.py": 100, "train_animals.py": 100,
          "train_artworks.py": 128}
QUICK_STEPS = 2  # Steps an epoch of every script on its quick data: full batches only.
QUICK_IMAGES = 24  # Images in quick_folder: two batches of 12.
QUICK_FASHION_BATCH = 16  # quick_data's batch size: the tests pass it with --batch-size.
# The unbroken run the survival tests compare with: a checkpoint per epoch, all kept; the
# moving average and TensorBoard on, so their outputs can be checked on every script too.
STRAIGHT_EPOCHS = 3
STRAIGHT = ("--epochs", STRAIGHT_EPOCHS, "--checkpoint-every", 1, "--keep-checkpoints", 5,
            "--ema", 0.9, "--tensorboard")


def script_module(script):
    import importlib
    return importlib.import_module(script[:-3])


@pytest.fixture(scope="session")
def quick_data(tmp_path_factory, sample_images):
    """32 real Fashion-MNIST images: two full batches of QUICK_FASHION_BATCH an epoch, so each
    process compiles its step once (tiny_data's partial second batch costs a second trace)
    and an epoch's steps take a fraction of a second."""
    def make(folder):
        folder.mkdir()
        write_idx_images(folder / "train-images-idx3-ubyte.gz",
                         sample_images[:QUICK_STEPS * QUICK_FASHION_BATCH])
    # Made once for all workers: the straight runs' args.json name it.
    return made_once(tmp_path_factory, "quick_fashion", make)


@pytest.fixture(scope="session")
def quick_folder(tmp_path_factory):
    """24 small shape images for the 64px scripts, in Rembrandt/ so that train_artworks.py
    finds its default artist (the other two search the folder recursively)."""
    from PIL import Image

    def make(root):
        (root / "Rembrandt").mkdir(parents=True)
        rng = np.random.default_rng(2)
        for index in range(QUICK_IMAGES):
            Image.fromarray(shape_image(rng, 48, 48)).save(
                root / "Rembrandt" / f"{index:02d}.png")
    return made_once(tmp_path_factory, "quick_images", make)


@pytest.fixture(scope="session")
def quick_flags(quick_data, quick_folder):
    """script -> the flags that train it on its quick data, QUICK_STEPS full steps an epoch."""
    def flags(script):
        if script == "train_fashion_mnist.py":
            return ["--data-dir", quick_data, "--batch-size", QUICK_FASHION_BATCH]
        return ["--data-dir", quick_folder, "--batch-size", QUICK_IMAGES // QUICK_STEPS]
    return flags


@pytest.fixture(scope="session")
def quick_train(quick_flags):
    """quick_train(script, out, *flags): the script on its quick data, writing to `out`, in
    a fresh Python. preexec_fn runs in the child before it starts (resource limits)."""
    def train(script, out, *flags, check=True, preexec_fn=None):
        if preexec_fn is None:
            return run_script(script, *quick_flags(script), "--out-dir", out, *flags,
                              check=check)
        result = subprocess.run(
            [sys.executable, str(ROOT / script), *map(str, quick_flags(script)), "--out-dir",
             str(out), *map(str, flags)], capture_output=True, text=True, env=ENV, cwd=ROOT,
            timeout=600, preexec_fn=preexec_fn)
        assert not check or result.returncode == 0, result.stderr
        return result
    return train


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory, quick_train):
    """script -> the out-dir of its unbroken STRAIGHT run on quick data (made once in the
    session, on first use; tests copy it before changing anything)."""
    def get(script):
        return made_once(tmp_path_factory, f"straight_{script[:-3]}",
                         lambda out: quick_train(script, out, *STRAIGHT))
    return get
