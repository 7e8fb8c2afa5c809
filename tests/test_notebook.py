"""The README's Colab cells, run in a real Jupyter kernel started from the clone: `from
train_... import main; main([...])` trains, and a script pasted without common/ stops with
one line saying how to get it."""

import shutil

import pytest

from conftest import ROOT

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


def run_cells(cells, cwd, timeout=300):
    """Run each cell's code in one fresh IPython kernel in `cwd`; return (stdout text,
    the error of the first failing cell or None)."""
    import os
    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", cwd=str(cwd), env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    output, error = [], None
    try:
        for code in cells:
            reply = client.execute_interactive(
                code, timeout=timeout,
                output_hook=lambda message: output.append(message["content"].get("text", "")))
            if reply["content"]["status"] == "error":
                error = reply["content"]
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return "".join(output), error


def test_colab_cell_trains_from_the_clone(tmp_path, tiny_data):
    out = tmp_path / "run"
    text, error = run_cells([
        # As the README's cell 2, with small data and one step.
        "from train_fashion_mnist import main\n"
        f"main(['--data-dir', {str(tiny_data)!r}, '--out-dir', {str(out)!r}, "
        "'--epochs', '1', '--max-steps', '1', '--resume'])",
        # Cell 3: the GIF displays.
        "from IPython.display import Image\n"
        f"print(type(Image(filename={str(out / 'progress.gif')!r})).__name__)",
    ], cwd=ROOT)
    assert error is None, error
    assert "done:" in text and "Image" in text
    assert (out / "generator.keras").is_file() and (out / "samples" / "epoch_0001.png").is_file()


@pytest.mark.parametrize("script", ["train_fashion_mnist.py", "train_animals.py"])
def test_a_script_pasted_without_common_says_how_to_get_it(tmp_path, script):
    shutil.copy(ROOT / script, tmp_path / script)  # Alone, as if pasted into a notebook.
    text, error = run_cells([(tmp_path / script).read_text()], cwd=tmp_path)
    assert error is not None and error["ename"] == "SystemExit"
    message = error["evalue"]
    assert "common/" in message and "clone" in message and "Colab" in message
    assert "\n" not in message.strip()
