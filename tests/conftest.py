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


# The longest tests that share no module-scoped run, started first: two workers finish
# together when the long jobs go first (a suite's last minute is otherwise one worker on a
# 100 s test while the other idles). Measured times: docs/reference.md#tests.
LONG_FIRST = ("test_sigkill_at_random_moments_then_resume_finishes_every_epoch_once",
              "test_on_collapse_stop_in_two_workers_names_the_chiefs_way_back_in_both",
              "test_ctrl_c_saves_do_not_push_out_epoch_checkpoints",
              "test_eval_every_scores_epochs_into_history_plot_and_tensorboard",
              "test_a_float16_run_resumes_in_float32_and_back")


def pytest_collection_modifyitems(config, items):
    # Stable: the long ones in LONG_FIRST's order, then the rest as collected.
    def rank(item):
        name = getattr(item, "originalname", item.name)
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)
    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_as_in_a_terminal():
    """A CI runner or `nohup ... &` may start the tests with SIGINT ignored or blocked, and
    child processes inherit that; a user's terminal never does. The Ctrl-C tests need it
    live, here and in the scripts they start."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_process(script, *args, check=True, timeout=600, **options):
    """Run ROOT/script with args in a new Python, as `python script ...` would: only for
    promises about what a new Python prints first (other promises about a process:
    run_forked). `options` go to subprocess.run (env, cwd)."""
    options = {"env": ENV, "cwd": ROOT, **options}
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, **options)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


_server = []  # This worker's process server, once a test has asked for it.


def process_server():
    """The worker's tests/process_server.py: TensorFlow and the scripts imported once, a
    forked child for each process a test starts (~0.1 s where a new Python takes ~5 s)."""
    if not _server:
        from process_server import ProcessServer
        _server.append(ProcessServer(ROOT, ENV))
    return _server[0]


@pytest.fixture(scope="session", autouse=True)
def close_process_server():
    yield
    if _server:
        _server.pop().close()


def run_forked(script, *args, check=True, timeout=600, preexec=None, env=None):
    """Run ROOT/script with args (or "-m", a module and its args; or "-c", code and its) in
    a fresh process forked from the process server, as `python script ...` would: for
    promises about a process (its exit status, a kill, Ctrl-C, a resource limit) but not
    about the lines a new Python prints first (run_process). `preexec`: a picklable
    callable run in the child first (process_server.files_at_most)."""
    argv = [str(ROOT / script) if script.endswith(".py") else script, *map(str, args)]
    result = process_server().run(argv, timeout=timeout, env=env, preexec=preexec)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def run_main(script, *args, check=True):
    """Call main(args) of `script` (train_x.py, or a module such as common.evaluate) in this
    process, as a notebook cell does, and return what a process would have: a
    CompletedProcess with the exit status (a SystemExit's code; 1, with the traceback in
    stderr, for any other exception) and everything it printed."""
    import contextlib
    import importlib
    import io
    import traceback

    module = importlib.import_module(script[:-3] if script.endswith(".py") else script)
    stdout, stderr = io.StringIO(), io.StringIO()
    status = 0
    argv0, sys.argv[0] = sys.argv[0], module.__file__  # argparse names it in its errors.
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            module.main([str(value) for value in args])
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)  # As Python prints it at exit.
        except Exception:  # What a process would die of: its traceback, status 1.
            traceback.print_exc()
            status = 1
        finally:
            sys.argv[0] = argv0
            reset_global_state()  # The next run starts as a new process would.
    result = subprocess.CompletedProcess([script, *map(str, args)], status,
                                         stdout.getvalue(), stderr.getvalue())
    if check and status != 0:
        raise AssertionError(f"{script} failed ({status}):\n{result.stdout}\n{result.stderr}")
    return result


def reset_global_state():
    """Put back what a run changes for the whole process, so each in-process run (and each
    test) starts as a fresh Python would: the out-dir locks it holds (a finished process lets
    go of them), Keras' precision policy and layer-name counters, the random seeds, and the
    Ctrl-C handler."""
    import random

    import keras
    import tensorflow as tf
    from common import rundir
    while rundir._locks:
        rundir._locks.popitem()[1].close()
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session(free_memory=False)  # Names start again at "dense", ... (no
    # gc.collect: 0.2 s a test; Python collects on its own).
    tf.random.set_seed(None)  # No global seed: as unseeded as a new process.
    random.seed()
    np.random.seed()
    # A terminal's Python, as ctrl_c_as_in_a_terminal makes it (CI may start us ignoring it).
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def fresh_global_state():
    """Every test leaves the process as it found it (see reset_global_state)."""
    yield
    reset_global_state()


def refused(script, *argv, status=None):
    """Call the script's main() in this process, as a notebook cell would, and return the
    one line it stopped with (it must stop with one)."""
    result = run_main(script, *argv, check=False)
    assert result.returncode != 0 or result.stderr, result.stdout
    lines = result.stderr.strip().splitlines() or [""]
    assert "Traceback" not in result.stderr, result.stderr
    message = lines[-1]
    if status is not None:
        assert result.returncode == status, (result.returncode, result.stderr)
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


def flip_generator_loss(script, monkeypatch):
    """Make the script's generator maximise its loss for this test: the broken model every
    learning test must fail on. train_step reads `generator_loss` from the script's module
    when it is traced, so the next run of the script trains with the flipped sign."""
    from common import losses
    module = script_module(script)
    assert module.generator_loss is losses.generator_loss  # The one the step calls.
    monkeypatch.setattr(module, "generator_loss",
                        lambda fake_logits: -losses.generator_loss(fake_logits))


def scripted_streaks(troubles):
    """A stand-in for common.health._streaks_by_row that sees each kind of trouble
    ({kind: epochs}) at exactly those epochs: the health check's verdicts, scripted."""
    def streaks_by_row(history):
        streaks = {"d_wins": [], "collapse": [], "divergence": []}
        for row in history:
            for kind in streaks:
                bad = row["epoch"] in troubles.get(kind, ())
                streaks[kind] = streaks[kind] + [row] if bad else []
            yield dict(streaks)
    return streaks_by_row


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


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory, request):
    """A temporary folder for one test file's shared runs, removed once that file's tests
    are done: a 64px checkpoint is ~90 MB, and a suite that kept every run would need
    several GB of /tmp (pytest.ini keeps only failed tests' own folders)."""
    import shutil
    folder = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


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
    return made_once(tmp_path_factory, "fashion_sample_run", lambda out: run_main(
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
    this process; with preexec (run in the child before it starts: resource limits), in a
    process of its own (run_forked)."""
    def train(script, out, *flags, check=True, preexec=None):
        argv = (*quick_flags(script), "--out-dir", out, *flags)
        if preexec is None:
            return run_main(script, *argv, check=check)
        return run_forked(script, *argv, check=check, preexec=preexec)
    return train


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory, quick_train):
    """script -> the out-dir of its unbroken STRAIGHT run on quick data (made once in the
    session, on first use; tests copy it before changing anything)."""
    def get(script):
        return made_once(tmp_path_factory, f"straight_{script[:-3]}",
                         lambda out: quick_train(script, out, *STRAIGHT))
    return get
