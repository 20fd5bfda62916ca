"""The binding drives the engine exactly as the CLI does: same files, same numbers, same errors."""
import json
import subprocess

import numpy as np
import pytest

import ml2o


def sh(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r


def read(p):
    return p.read_bytes()


def without_wall_time(summary):
    summary = dict(summary)
    summary.pop("wall_seconds")
    return summary


def test_run_writes_what_the_cli_writes(cli, tiny_config, tmp_path):
    sh(cli, "run", tiny_config, "--out", tmp_path / "cli")
    res = ml2o.run(ml2o.load_config(tiny_config), out=tmp_path / "py")
    for name in ("curves.csv", "l2o.params", "ml2o.params", "config.toml"):
        assert read(tmp_path / "cli" / name) == read(tmp_path / "py" / name), name
    cli_summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert without_wall_time(res["summary"]) == without_wall_time(cli_summary)
    # The returned curves are curves.csv's numbers.
    ml2o_curve = res["curves"][("ml2o", 2, "test")]
    assert ml2o_curve.shape == (2, 61)
    rows = [line.split(",") for line in (tmp_path / "cli" / "curves.csv").read_text().splitlines()[1:]]
    want = [float(r[5]) for r in rows if r[0] == "ml2o"]
    assert np.array_equal(ml2o_curve.ravel(), np.array(want))


def test_train_adapt_eval_match_the_cli_bit_for_bit(cli, tiny_config, tmp_path):
    sh(cli, "train", "--config", tiny_config, "--method", "l2o", "--out", tmp_path / "cli")
    opt, summary = ml2o.train(tiny_config, out=tmp_path / "py", method="l2o")
    params = tmp_path / "cli" / "l2o.params"
    assert read(params) == read(tmp_path / "py" / "l2o.params")
    assert summary["epochs"] >= 1 and len(summary["meta_loss_per_epoch"]) == summary["epochs"]
    assert np.array_equal(opt.weights, ml2o.LearnedOptimizer.load(params).weights)

    sh(cli, "adapt", "--config", tiny_config, "--params", params, "--K", 3, "--source", "test",
       "--out", tmp_path / "cli_adapted.params")
    adapted = ml2o.adapt(tiny_config, params, K=3, source="test", out=tmp_path / "py_adapted.params")
    assert read(tmp_path / "cli_adapted.params") == read(tmp_path / "py_adapted.params")
    assert adapted.skipped == 0

    sh(cli, "eval", "--config", tiny_config, "--params", params, "--steps", 25, "--out", tmp_path / "cli_eval")
    curves = ml2o.evaluate(tiny_config, params, steps=25, out=tmp_path / "py_eval")
    assert read(tmp_path / "cli_eval" / "curves.csv") == read(tmp_path / "py_eval" / "curves.csv")
    assert curves.shape == (2, 26) and curves.dtype == np.float64
    text = "seed,step,objective\n" + "".join(
        f"{s},{t},{curves[s, t]:.9g}\n" for s in range(2) for t in range(26))
    assert text == (tmp_path / "cli_eval" / "curves.csv").read_text()

    sh(cli, "baseline", "--config", tiny_config, "--optimizer", "fista", "--steps", 30, "--out", tmp_path / "cli_b")
    b = ml2o.baseline(tiny_config, "fista", steps=30, out=tmp_path / "py_b")
    assert read(tmp_path / "cli_b" / "baseline.csv") == read(tmp_path / "py_b" / "baseline.csv")
    assert b.shape == (31,)


def test_a_dict_config_is_the_file_config(tiny_config):
    import tomllib
    from_file = ml2o.load_config(tiny_config)
    from_dict = ml2o.load_config(tomllib.loads(tiny_config.read_text()))
    assert from_dict.json == from_file.json
    assert from_dict.path == "<dict>"
    assert ml2o.load_config(tiny_config, backend="cpu").json["run"]["backend"] == "cpu"


@pytest.mark.parametrize("cfg, fragment", [
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"train": {"unrol": 20}}, "train.unrol"),
    ({"eval": {"seeds": "ten"}}, "eval.seeds"),
    ({"optimizer": {"arch": "lstm"}}, "optimizer.arch"),
    ({"adapt": {"sources": ["test", "elsewhere"]}}, "adapt.sources"),
])
def test_bad_config_raises_value_error_naming_the_key(cfg, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        ml2o.load_config(cfg)


def test_bad_inputs_of_the_commands_raise_with_the_engines_message(tiny_config, tmp_path):
    with pytest.raises(ValueError, match="cannot read config file"):
        ml2o.load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="backend 'gpu': allowed: cpu, cuda, auto"):
        ml2o.load_config(tiny_config, backend="gpu")
    with pytest.raises(TypeError, match="expected a path or a dict"):
        ml2o.load_config(42)
    garbage = tmp_path / "garbage.params"
    garbage.write_text("definitely not params")
    with pytest.raises(ValueError, match="not an ml2o params file"):
        ml2o.evaluate(tiny_config, garbage)
    with pytest.raises(ValueError, match="method 'maml': allowed: l2o, ml2o"):
        ml2o.train(tiny_config, out=tmp_path / "t", method="maml")
    with pytest.raises(ValueError, match="source 'train': allowed: test, adapt"):
        ml2o.adapt(tiny_config, ml2o.LearnedOptimizer.init(), source="train")
    dm = ml2o.LearnedOptimizer.init("dmlstm")
    with pytest.raises(ValueError, match="params are dmlstm but .* sets optimizer.arch = rnnprop"):
        ml2o.adapt(tiny_config, dm)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        ml2o.run(tiny_config, out=a_file)
    with pytest.raises(ValueError, match="optimizer 'lbfgs': allowed"):
        ml2o.baseline(tiny_config, "lbfgs")
    with pytest.raises(ValueError, match="arch 'lstm': allowed: rnnprop, dmlstm"):
        ml2o.LearnedOptimizer.init("lstm")
