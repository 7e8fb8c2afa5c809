"""Where and how a script trains: --precision, --jit and --strategy, resolved for this machine.

    auto precision: mixed bfloat16 on GPUs of compute capability 8.0+ (Ampere and newer)
                    and on CPUs with AVX512_BF16 or AMX; mixed float16 (with loss scaling)
                    on GPUs of 7.x; float32 otherwise.
    auto jit:       XLA on one GPU; off on CPUs, where it measured slower (BENCHMARKS.md),
                    and under several devices, as Keras' fit() does.
    auto strategy:  several machines when TF_CONFIG names more than one task, all local
                    GPUs when there are several, else the default single device.
"""

import json
import os

import keras
import tensorflow as tf

PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def add_device_arguments(parser):
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="compute precision; the weights, the generator's last layer, "
                             "D's logit and the losses stay float32 (default: %(default)s: "
                             "bfloat16 where the hardware runs it fast, float16 on older "
                             "GPUs, else float32)")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="compile the train step with XLA (default: %(default)s: on "
                             "with a GPU, off on a CPU, where it is slower)")
    parser.add_argument("--strategy", choices=("auto", "none", "mirrored", "multiworker"),
                        default="auto",
                        help="tf.distribute strategy: mirrored = all local GPUs (or all "
                             "logical CPUs), multiworker = the machines in TF_CONFIG "
                             "(default: %(default)s: multiworker if TF_CONFIG names several "
                             "tasks, mirrored with several GPUs, else none)")


def _gpu_capabilities():
    return [tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")]


def cpu_has_fast_bfloat16():
    """True when the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next((line for line in file if line.startswith("flags")), "").split()
    except OSError:  # Not Linux: no cheap way to tell, so stay with float32.
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_policy(precision):
    """The Keras dtype policy for --precision (auto resolved for this machine)."""
    if precision != "auto":
        return PRECISIONS[precision]
    capabilities = _gpu_capabilities()
    if capabilities:
        if min(capabilities) >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if min(capabilities) >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_has_fast_bfloat16() else "float32"


def choose_jit(jit, strategy):
    """Whether to compile the train step with XLA (--jit; auto means: on one GPU).

    Like Keras' own fit(), auto leaves XLA off under a multi-device strategy: there each
    device's compiled step would have to reach the other devices' copies of the weights
    (XLA refuses that, at least on CPUs, where it was tried).
    """
    several = strategy.num_replicas_in_sync > 1
    if jit == "on" and several:
        raise ValueError("--jit on does not work with several devices (--strategy mirrored "
                         "or multiworker); use --jit auto or off there")
    if jit == "auto":
        return bool(tf.config.list_physical_devices("GPU")) and not several
    return jit == "on"


def _cluster_size():
    """Tasks in TF_CONFIG's cluster (0 when TF_CONFIG is unset)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return 0
    try:
        config = json.loads(text)
        cluster = config["cluster"]
        size = sum(len(tasks) for tasks in cluster.values())
        task = config.get("task", {})
        if size and not (isinstance(task.get("index", 0), int) and isinstance(
                task.get("type", "worker"), str)
                and 0 <= task.get("index", 0) < len(cluster.get(task.get("type", "worker"), []))):
            raise ValueError
        if not all(isinstance(address, str) and ":" in address
                   for tasks in cluster.values() for address in tasks):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("TF_CONFIG is not JSON with a \"cluster\" of host:port lists and a "
                         "\"task\" whose type and index name one of them; see the README's "
                         "\"More GPUs and machines\" for an example") from None
    return size


def choose_strategy(strategy):
    """The tf.distribute strategy for --strategy. Call it before any other TensorFlow work:
    MultiWorkerMirroredStrategy must be created before TensorFlow starts its runtime."""
    if strategy == "auto":
        if _cluster_size() > 1:
            strategy = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            strategy = "mirrored"
        else:
            strategy = "none"
    if strategy == "multiworker":
        if _cluster_size() == 0:
            raise ValueError("--strategy multiworker needs TF_CONFIG describing the cluster "
                             "and this task; see the README's \"More GPUs and machines\"")
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except (tf.errors.OpError, RuntimeError, ValueError) as error:  # E.g. a busy port.
            reason = " ".join(str(error).split())[:160]
            raise ValueError(f"cannot start this worker of --strategy multiworker ({reason}); "
                             f"check TF_CONFIG's addresses and that this task's port is "
                             f"free") from None
    if strategy == "mirrored":
        # All GPUs; without any, all logical CPUs (how the tests run it on a CPU).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the one task that writes the run's files (always, unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def describe(strategy, policy, jit):
    """One line saying where and how the run trains."""
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        where = "MultiWorkerMirroredStrategy"
    else:
        where = type(strategy).__name__
        where = "one device" if where.startswith("_Default") else where
    return (f"training on {where}" + (f" ({replicas} replicas)" if replicas > 1 else "")
            + f", precision {policy}, XLA {'on' if jit else 'off'}")


def set_policy(policy):
    """Make `policy` the Keras dtype policy of the models built after this call."""
    keras.mixed_precision.set_global_policy(policy)


def portable_copy(model):
    """`model` with the same weights in float32 layers and ordinary BatchNorm: what is saved
    as generator.keras, so it loads and runs anywhere (bfloat16 convolutions, for one, do
    not run on older GPUs), whatever precision and devices trained it."""
    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        if "synchronized" in config:
            config["synchronized"] = False
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
