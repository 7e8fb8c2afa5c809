"""tests/process_server.py: a forked child is the process `python ...` would be, so the
tests that need a process of their own can trust it: arguments, environment, working
folder, streams, exit status, signals, and a file-size limit."""

import signal
import subprocess
import time

import pytest

from conftest import ENV, ROOT, process_server
from process_server import files_at_most

SHOW = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "name": __name__,
                  "marker": os.environ.get("MARKER"), "path": sys.path}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def test_a_child_gets_its_arguments_environment_folder_and_exit_status(tmp_path):
    import json
    result = process_server().run(["-c", SHOW, 3, "x y"], cwd=tmp_path,
                                  env={**ENV, "MARKER": "here"})
    seen = json.loads(result.stdout)
    assert result.returncode == 3 and result.stderr == "to stderr\n"
    path = seen.pop("path")
    assert seen == {"argv": ["-c", "3", "x y"], "cwd": str(tmp_path), "name": "__main__",
                    "marker": "here"}
    # `python -c`'s path: the working folder first, not the server's folders.
    assert path[0] == "" and str(ROOT) not in path and str(ROOT / "tests") not in path
    # The next child starts from the server's environment, not the last child's.
    assert json.loads(process_server().run(["-c", SHOW, 0]).stdout)["marker"] is None


def test_a_script_and_a_module_run_as_main_with_their_exit_status(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(__name__, sys.argv[1:])\nraise SystemExit('no')\n")
    result = process_server().run([script, "a"])
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "__main__ ['a']\n", "no\n")  # SystemExit with a message: printed, status 1.
    module = process_server().run(["-m", "common.evaluate", tmp_path / "missing"], cwd=ROOT)
    assert module.returncode == 1 and module.stderr.startswith("error: run folder")
    assert "Traceback" not in module.stderr and "RuntimeWarning" not in module.stderr


def test_an_uncaught_exception_is_a_traceback_and_status_1():
    result = process_server().run(["-c", "raise ValueError('broken')"])
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: broken" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_signal_ends_the_child_as_it_ends_a_process(signum):
    child = process_server().popen(["-c", "import time; print('up', flush=True); "
                                    "time.sleep(60)"], stdout=subprocess.PIPE)
    assert child.stdout.readline() == "up\n"
    assert child.poll() is None
    child.send_signal(signum)
    assert child.wait(timeout=30) == -signum
    child.communicate()


def test_ctrl_c_is_a_keyboard_interrupt_as_in_a_terminal():
    code = ("import time\ntry:\n    print('up', flush=True)\n    time.sleep(60)\n"
            "except KeyboardInterrupt:\n    raise SystemExit(130)\n")
    child = process_server().popen(["-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline() == "up\n"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == 130
    child.communicate()
    # Not caught: Python dies of the signal, as `python -c` does.
    child = process_server().popen(["-c", "import time; print('up', flush=True); "
                                    "time.sleep(60)"], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL)
    assert child.stdout.readline() == "up\n"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=30) == -signal.SIGINT
    child.communicate()


def test_wait_times_out_while_the_child_runs():
    child = process_server().popen(["-c", "import time; time.sleep(60)"])
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    assert time.monotonic() - began < 5
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_a_file_size_limit_fails_writes_past_it(tmp_path):
    code = ("import sys\ntry:\n    with open(sys.argv[1], 'wb') as file:\n"
            "        file.write(b'x' * 5000)\n"
            "except OSError as error:\n    print(error.strerror)\n")
    result = process_server().run(["-c", code, tmp_path / "big"], preexec=files_at_most(1000))
    assert result.returncode == 0 and result.stdout == "File too large\n", result.stderr
    assert (tmp_path / "big").stat().st_size == 1000


def test_an_environment_tensorflow_reads_at_import_is_refused():
    with pytest.raises(ValueError, match="TF_CPP_MIN_LOG_LEVEL"):
        process_server().popen(["-c", "pass"], env={**ENV, "TF_CPP_MIN_LOG_LEVEL": "0"})
