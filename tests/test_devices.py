"""Precision, XLA and tf.distribute: what auto picks, and runs on two logical CPU devices
and two worker processes that must train exactly like one device."""

import csv
import json
import re
import socket
import subprocess
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from common import devices
from common.checkpoints import epochs_of_checkpoints
from conftest import ENV, ROOT, process_server, run_forked, run_main

MODEL_FILES = ("args.json", "checkpoints", "d_probs.png", "generator.keras", "history.csv",
               "losses.png", "progress.gif", "samples")


def history(out):
    with open(out / "history.csv", newline="") as file:
        return list(csv.DictReader(file))


def losses_of(out):
    return np.array([[float(row[name]) for name in ("d_loss", "g_loss", "d_real", "d_fake")]
                     for row in history(out)])


# --- What auto picks -----------------------------------------------------------------------


@pytest.mark.parametrize("gpus, cpu_bf16, expected", [
    ([(8, 0)], False, "mixed_bfloat16"),       # Ampere and newer.
    ([(9, 0), (8, 6)], False, "mixed_bfloat16"),
    ([(7, 5)], True, "mixed_float16"),         # T4, V100: float16 tensor cores.
    ([(8, 0), (7, 0)], False, "mixed_float16"),  # The slowest GPU decides.
    ([(6, 0)], True, "float32"),               # Pascal: no fast half precision.
    ([], True, "mixed_bfloat16"),              # A CPU with AVX512_BF16 or AMX, like CI's.
    ([], False, "float32"),
])
def test_auto_precision(monkeypatch, gpus, cpu_bf16, expected):
    monkeypatch.setattr(devices, "_gpu_capabilities", lambda: gpus)
    monkeypatch.setattr(devices, "cpu_has_fast_bfloat16", lambda: cpu_bf16)
    assert devices.choose_policy("auto") == expected


def test_explicit_precision_is_obeyed(monkeypatch):
    monkeypatch.setattr(devices, "_gpu_capabilities", lambda: [(8, 0)])
    assert [devices.choose_policy(name) for name in ("float32", "bfloat16", "float16")] == [
        "float32", "mixed_bfloat16", "mixed_float16"]


def fake_strategy(replicas, task_type=None, task_id=0, cluster=None):
    resolver = None
    if task_type:
        spec = types.SimpleNamespace(as_dict=lambda: cluster)
        resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                         cluster_spec=lambda: spec)
    return types.SimpleNamespace(num_replicas_in_sync=replicas, cluster_resolver=resolver)


def test_jit_auto_is_off_on_a_cpu_and_on_with_one_gpu(monkeypatch):
    assert devices.choose_jit("auto", fake_strategy(1)) is False  # This machine: no GPU.
    assert devices.choose_jit("on", fake_strategy(1)) is True
    assert devices.choose_jit("off", fake_strategy(1)) is False
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["gpu"] if kind == "GPU" else [])
    assert devices.choose_jit("auto", fake_strategy(1)) is True
    assert devices.choose_jit("auto", fake_strategy(2)) is False  # As Keras' fit() does.
    with pytest.raises(ValueError, match="--jit on does not work with several devices"):
        devices.choose_jit("on", fake_strategy(2))


def test_chief_is_the_chief_task_or_worker_0():
    assert devices.is_chief(fake_strategy(1))
    workers = {"worker": ["a:1", "b:2"]}
    assert devices.is_chief(fake_strategy(2, "worker", 0, workers))
    assert not devices.is_chief(fake_strategy(2, "worker", 1, workers))
    with_chief = {"chief": ["a:1"], "worker": ["b:2"]}
    assert devices.is_chief(fake_strategy(2, "chief", 0, with_chief))
    assert not devices.is_chief(fake_strategy(2, "worker", 0, with_chief))


def test_auto_strategy_on_one_cpu_is_the_default(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert devices.choose_strategy("auto") is tf.distribute.get_strategy()
    assert devices.choose_strategy("none").num_replicas_in_sync == 1


@pytest.mark.parametrize("tf_config, expected", [
    (None, "--strategy multiworker needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is not JSON"),
])
def test_multiworker_without_a_cluster_is_refused(monkeypatch, tf_config, expected):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=expected):
        devices.choose_strategy("multiworker")


# --- Mixed precision in the models --------------------------------------------------------


@pytest.mark.parametrize("script", ["train_fashion_mnist", "train_faces", "train_animals",
                                    "train_artworks"])
def test_mixed_models_keep_float32_weights_and_float32_ends(script):
    module = __import__(script)
    devices.set_policy("mixed_bfloat16")
    try:
        generator, discriminator = module.make_generator(), module.make_discriminator()
    finally:
        devices.set_policy("float32")
    images = generator(tf.zeros([2, generator.input_shape[-1]]))
    assert images.dtype == tf.float32  # G's last layer stays float32 ...
    assert discriminator(images).dtype == tf.float32  # ... and so does D's logit.
    assert generator.layers[1].compute_dtype == "bfloat16"  # The rest computes in bfloat16,
    assert all(weight.dtype == "float32" for weight in generator.weights)  # on float32 weights.


def test_loss_scale_optimizer_only_for_float16():
    from common.optimizers import make_adam
    assert isinstance(make_adam(1e-3, "mixed_float16"), keras.optimizers.LossScaleOptimizer)
    for policy in ("float32", "mixed_bfloat16"):
        optimizer = make_adam(1e-3, policy)
        assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        assert float(optimizer.scale_loss(tf.constant(2.0))) == 2.0


# --- Runs: every precision and XLA on the CPU (the GPU paths, exercised) --------------------


@pytest.mark.parametrize("flags, line", [
    (["--precision", "float16"], "precision mixed_float16, XLA off"),
    (["--precision", "bfloat16"], "precision mixed_bfloat16, XLA off"),
    (["--precision", "float32", "--jit", "on"], "precision float32, XLA on"),
])
def test_precision_and_jit_runs_train_and_save(tmp_path, tiny_data, flags, line):
    out = tmp_path / "run"
    # Batch 2, one step: float16 convolutions' gradients have no fast kernel on some CPUs
    # (1.7 s an image on an AMX Xeon, 2026-12-03), and one step proves the path.
    result = run_main("train_fashion_mnist.py", "--data-dir", tiny_data, "--out-dir", out,
                      "--batch-size", 2, "--max-steps", 1, *flags)
    assert line in result.stdout
    assert len(history(out)) == 1 and np.isfinite(losses_of(out)).all()
    generator = keras.saving.load_model(out / "generator.keras")
    images = generator(tf.zeros([2, 128]))
    assert images.dtype == tf.float32 and images.shape == (2, 28, 28, 1)
    # Saved in float32 whatever trained it, so it runs anywhere (old GPUs lack bfloat16).
    assert {layer.compute_dtype for layer in generator.layers} == {"float32"}
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(latest)]
    # float16 runs keep a loss scale in the checkpoint, so --resume goes on with it.
    assert any("dynamic_scale" in name for name in names) == ("float16" in flags)


def test_multiworker_without_tf_config_is_refused(tmp_path, tiny_data):
    env = {name: value for name, value in ENV.items() if name != "TF_CONFIG"}
    result = run_forked("train_fashion_mnist.py", "--data-dir", tiny_data,
                        "--out-dir", tmp_path / "run", "--strategy", "multiworker",
                        check=False, env=env, timeout=300)
    assert result.returncode != 0 and "needs TF_CONFIG" in result.stderr
    assert not (tmp_path / "run" / "args.json").exists()


# --- Several devices train like one --------------------------------------------------------

# Two logical CPU devices stand in for two GPUs: they must be made before TensorFlow
# starts, so this runs the script's main() from a small launcher, in a process of its own
# (forked from the process server, which has imported TensorFlow but not started it).
LAUNCHER = """
import sys
import tensorflow as tf
devices = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
sys.path.insert(0, sys.argv[2])
import train_animals
train_animals.main(sys.argv[3:])
"""


def animals_run(messy_folder, out, *flags):
    """train_animals.py for 2 steps of 8 images in float32 (the script without dropout, so
    two devices can match one exactly)."""
    data, _, _ = messy_folder
    return ["--data-dir", str(data), "--out-dir", str(out), "--batch-size", "8",
            "--max-steps", "2", "--precision", "float32", "--seed", "5", *flags]


def launch(devices_count, args, check=True):
    result = run_forked("-c", LAUNCHER, devices_count, ROOT, *args, check=False)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def one_device_run(module_folder, messy_folder):
    out = module_folder / "one_device"
    launch(1, animals_run(messy_folder, out))
    return out


def test_mirrored_two_devices_train_like_one(tmp_path, messy_folder, one_device_run):
    out = tmp_path / "run"
    result = launch(2, animals_run(messy_folder, out, "--strategy", "mirrored"))
    assert "MirroredStrategy (2 replicas)" in result.stdout
    # The same global batch, split over two devices, gives the same losses and D outputs
    # as one device (the mean over the first two steps, which includes the first update).
    np.testing.assert_allclose(losses_of(out), losses_of(one_device_run), rtol=2e-3)
    assert sorted(path.name for path in out.iterdir() if path.name != ".lock") == sorted(
        MODEL_FILES)


def test_jit_on_with_several_devices_is_refused(tmp_path, messy_folder):
    out = tmp_path / "run"
    result = launch(2, animals_run(messy_folder, out, "--strategy", "mirrored", "--jit", "on"),
                    check=False)
    assert result.returncode != 0
    assert "error: --jit on does not work with several devices" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def two_workers(argv, folder):
    """`python argv` as worker 0 and worker 1 of a localhost cluster (TF_CONFIG), both run
    from `folder`, each a process of its own: [(exit status, stdout, stderr)] of each."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = [process_server().popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=folder,
        env={**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    return [(worker.returncode, *output) for worker, output in zip(workers, outputs)]


def test_two_worker_processes_train_like_one_and_write_one_run(tmp_path, messy_folder,
                                                                one_device_run):
    out = tmp_path / "run"
    finished = two_workers([ROOT / "train_animals.py",
                            *animals_run(messy_folder, out, "--strategy", "multiworker")],
                           tmp_path)
    for status, stdout, stderr in finished:
        assert status == 0, stdout + stderr
        assert "MultiWorkerMirroredStrategy (2 replicas)" in stdout
    # One set of outputs, written by the chief (worker 0); worker 1's scratch checkpoints
    # are gone and it wrote nothing else, here or in its working folder.
    assert sorted(path.name for path in out.iterdir() if path.name != ".lock") == sorted(
        MODEL_FILES)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    assert len(history(out)) == 1 and len(list((out / "samples").iterdir())) == 1
    checkpoints = [path.name for path in (out / "checkpoints").iterdir()]
    assert sorted(checkpoints) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    np.testing.assert_allclose(losses_of(out), losses_of(one_device_run), rtol=2e-3)


# The health check with its verdicts scripted (conftest.scripted_streaks): the troubles in
# argv[1] seen at exactly those epochs, so both workers see the same.
SCRIPTED_WORKER = """
import json, os, sys
sys.path[:0] = [sys.argv[2], os.path.join(sys.argv[2], "tests")]
from common import health
from conftest import scripted_streaks
health._streaks_by_row = scripted_streaks(json.loads(sys.argv[1]))
import train_animals
train_animals.main(sys.argv[3:])
"""


def test_on_collapse_stop_in_two_workers_names_the_chiefs_way_back_in_both(
        tmp_path, messy_folder):
    # Two epochs on one device, then resumed on two workers, with a mode collapse from epoch
    # 3, said at 4: the way back, epoch 2, is in the chief's checkpoints/ only (worker 1's
    # scratch folder is new in each run), and both workers must name it.
    out = tmp_path / "run"
    run_main("train_animals.py", *animals_run(messy_folder, out), "--max-steps", 20,
             "--epochs", 2, "--checkpoint-every", 1, "--keep-checkpoints", 1,
             "--on-collapse", "stop")
    finished = two_workers(["-c", SCRIPTED_WORKER, json.dumps({"collapse": [3, 4, 5]}), ROOT,
                            "--resume", "--out-dir", out, "--epochs", 5, "--strategy",
                            "multiworker"], tmp_path)
    for status, stdout, stderr in finished:
        assert status == 1, stdout + stderr
        line = stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"error: mode collapse: .* since epoch 3: .*; go back with "
                            rf"--resume-from 2 --out-dir {re.escape(str(out))} and other "
                            rf"settings; stopped \(--on-collapse stop\) after saving epoch 4",
                            line), line
        assert "warning:" not in stdout
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [2, 4]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
