"""Shared fixtures: the CLI binary the binding is compared with, and a tiny config."""
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY = """
[run]
name = "tiny"
seed = 7
backend = "cpu"

[train]
max_epochs = 4
curriculum = [20, 40]
eval_every = 2
eval_batches = 1

[[train.task]]
family = "lasso"
dim = 3
instances = 4
sigma = [0.5, 1.0]

[adapt]
K = [2]
trajectory = 40

[eval]
steps = 60
seeds = 2

[eval.task]
family = "lasso"
dim = 3
instances = 4
sigma = 10.0

[baselines]
optimizers = ["adam", "fista"]
lrs = [0.01, 0.1]
"""


@pytest.fixture(scope="session")
def cli():
    """The ml2o binary: $ML2O_CLI, else build/ml2o or build-cpu/ml2o of this checkout."""
    path = os.environ.get("ML2O_CLI")
    if not path:
        for cand in (REPO / "build" / "ml2o", REPO / "build-cpu" / "ml2o"):
            if cand.exists():
                path = str(cand)
                break
    if not path or not shutil.which(path):
        pytest.fail("the ml2o CLI was not found: build it (scripts/test.sh does) or set ML2O_CLI")
    return path


@pytest.fixture
def tiny_config(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="session")
def trained_params(tmp_path_factory):
    """An M-L2O optimizer pretrained on small LASSO tasks (the README example's config): seconds."""
    import ml2o
    out = tmp_path_factory.mktemp("trained")
    ml2o.train(REPO / "configs" / "python-quick.toml", out=out, method="ml2o")
    return str(out / "ml2o.params")
