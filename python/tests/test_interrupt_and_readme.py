"""Ctrl-C during a long engine call, and the README's Python example run as written."""
import math
import os
import re
import signal
import subprocess
import sys
import time

from conftest import REPO

LONG_TRAINING = r'''
import sys
import ml2o
cfg = ml2o.load_config({
    "run": {"backend": "cpu"},
    "train": {"max_epochs": 100000, "curriculum": [1000], "eval_every": 100000,
              "task": [{"family": "lasso", "dim": 3, "instances": 4}]},
    "eval": {"task": {"family": "lasso", "dim": 3, "instances": 4}},
})
print("started", flush=True)
try:
    ml2o.train(cfg, out=sys.argv[1])
except KeyboardInterrupt as e:
    print("KeyboardInterrupt:", e, flush=True)
    sys.exit(7)
'''


def test_ctrl_c_stops_training_cleanly_and_raises_keyboard_interrupt(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", LONG_TRAINING, str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    time.sleep(2.0)  # inside ml2o.train (the config is loaded; training runs for hours)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 7, stdout + stderr
    assert "KeyboardInterrupt: interrupted during ml2o training; checkpoint written to" in stdout
    assert (out / "checkpoints" / "ml2o.ckpt").exists()


def readme_example():
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- python-example:begin -->\s*```python\n(.*?)```\s*<!-- python-example:end -->", text, re.S)
    assert m, "README.md has no python example between its markers"
    return m.group(1)


def test_the_readme_python_example_runs_as_written(tmp_path):
    code = readme_example()
    assert len(code.strip().splitlines()) == 10
    os.symlink(REPO / "configs", tmp_path / "configs")  # the example's paths are the repository's
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"digits loss after 200 steps: ([0-9.]+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) < 0.5 * math.log(10), r.stdout  # from about log(10) at the start
