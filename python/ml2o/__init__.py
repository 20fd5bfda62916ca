"""ml2o from Python: drive the engine (load_config, run, train, adapt, evaluate) and use a learned
optimizer on your own arrays (LearnedOptimizer) or PyTorch model (ml2o.torch.L2O).

See docs/python.md. Every function runs the same code as the command line (`ml2o run/train/adapt/
eval`) and returns what it writes, as Python and numpy objects.
"""
import csv
import json
import math
import os

import numpy as np

from . import _core
from ._core import Config, DivergenceError

__all__ = ["Config", "DivergenceError", "LearnedOptimizer", "load_config", "run", "train", "adapt",
           "evaluate", "baseline", "sample_task", "version"]

version = _core.version


# ---- configs -------------------------------------------------------------------------------------
def _toml_value(v, key):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    raise ValueError(f"config key '{key}': {type(v).__name__} is not a TOML value")


def _dict_to_toml(d, prefix=""):
    """TOML text of a config dict: scalars first, then [tables] and [[arrays of tables]]."""
    lines, tables = [], []
    for k, v in d.items():
        if not isinstance(k, str):
            raise ValueError(f"config key {k!r}: keys must be strings")
        full = prefix + k
        if isinstance(v, dict):
            tables.append(f"\n[{full}]\n" + _dict_to_toml(v, full + "."))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                tables.append(f"\n[[{full}]]\n" + _dict_to_toml(item, full + "."))
        else:
            lines.append(f"{json.dumps(k)} = {_toml_value(v, full)}\n")
    return "".join(lines) + "".join(tables)


def load_config(source, backend=None):
    """A validated config from a TOML file path or a dict shaped like the TOML file.

    Raises ValueError with the CLI's message (naming the file or "<dict>", the key and what is
    allowed). backend overrides run.backend ("cpu", "cuda" or "auto"), as --backend does.
    """
    if backend is not None and backend not in ("cpu", "cuda", "auto"):
        raise ValueError(f"backend '{backend}': allowed: cpu, cuda, auto")
    if isinstance(source, Config):
        return source if backend is None else _core.parse_config_text(source.toml, source.path, backend)
    if isinstance(source, dict):
        return _core.parse_config_text(_dict_to_toml(source), "<dict>", backend or "")
    if isinstance(source, (str, os.PathLike)):
        return _core.load_config_file(os.fspath(source), backend or "")
    raise TypeError(f"load_config: expected a path or a dict, got {type(source).__name__}")


def load_config_text(text, source="<text>", backend=None):
    """A validated config from TOML text; source names it in messages."""
    return _core.parse_config_text(text, source, backend or "")


def _config(cfg):
    return cfg if isinstance(cfg, Config) else load_config(cfg)


def _weights(params):
    """(engine weights, name for messages) from a path or a LearnedOptimizer."""
    if isinstance(params, LearnedOptimizer):
        return params._w, "<LearnedOptimizer>"
    if isinstance(params, (str, os.PathLike)):
        path = os.fspath(params)
        return _core.Weights.load(path), path
    raise TypeError(f"params: expected a path or a LearnedOptimizer, got {type(params).__name__}")


def _out(out):
    if out is None:
        return ""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ValueError("out: expected a non-empty directory path")
    return os.fspath(out)


# ---- the engine's commands ----------------------------------------------------------------------------
def read_curves(path):
    """curves.csv of a run as {(arm, K, source): array [seeds, steps + 1]}."""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["arm"], int(r["K"]), r["source"])
            rows.setdefault(key, {}).setdefault(int(r["seed"]), {})[int(r["step"])] = float(r["objective"])
    out = {}
    for key, seeds in rows.items():
        steps = max(len(s) for s in seeds.values())
        arr = np.full((len(seeds), steps), np.nan)
        for s, by_step in seeds.items():
            for t, v in by_step.items():
                arr[s, t] = v
        out[key] = arr
    return out


def run(cfg, out, resume=False, checkpoint_every=30.0):
    """`ml2o run CONFIG --out OUT`: the whole protocol. Returns {"summary": summary.json as a dict,
    "curves": {(arm, K, source): array [seeds, steps + 1]}, "out": OUT}, read from the files it
    wrote (so identical to the CLI's)."""
    cfg = _config(cfg)
    out = _out(out)
    if not out:
        raise ValueError("run: out is required (the run's directory)")
    _core.run(cfg, out, bool(resume), float(checkpoint_every))
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {"summary": summary, "curves": read_curves(os.path.join(out, "curves.csv")), "out": out}


def train(cfg, out, method="ml2o", init=None, resume=False, checkpoint_every=30.0):
    """`ml2o train`: meta-trains into OUT/<method>.params. Returns (LearnedOptimizer, summary)."""
    cfg = _config(cfg)
    out = _out(out)
    if not out:
        raise ValueError("train: out is required (the training's directory)")
    init_w = _weights(init)[0] if init is not None else None
    w, summary = _core.train(cfg, method, out, init_w, bool(resume), float(checkpoint_every))
    return LearnedOptimizer(w), summary


def adapt(cfg, params, K=5, source="test", seed_index=0, out=None):
    """`ml2o adapt`: K Adam updates of the weights on the config's instances. Returns the adapted
    LearnedOptimizer (also written to the file `out` when given) and sets its .skipped."""
    cfg = _config(cfg)
    w, name = _weights(params)
    adapted, skipped = _core.adapt(cfg, w, name, int(K), source, int(seed_index))
    if out is not None:
        adapted.save(_out(out))
    opt = LearnedOptimizer(adapted)
    opt.skipped = skipped
    return opt


def evaluate(cfg, params, steps=None, out=None):
    """`ml2o eval`: frozen weights on eval.task, every seed. Returns an array [seeds, steps + 1] of
    mean objectives (OUT/curves.csv is written when out is given)."""
    cfg = _config(cfg)
    w, source = _weights(params)
    return _core.evaluate(cfg, w, source, 0 if steps is None else int(steps), _out(out))


def baseline(cfg, optimizer="adam", lr=0.01, steps=1000, task="eval", seed_index=0, out=None):
    """`ml2o baseline`: an analytical optimizer on a task of the config. Returns steps + 1 objectives."""
    cfg = _config(cfg)
    return _core.baseline(cfg, optimizer, float(lr), int(steps), task, int(seed_index), _out(out))


def sample_task(cfg, role="eval", seed_index=0):
    """The instances the engine samples for eval.task (role "eval") or adapt.task ("adapt") at a
    seed offset: {"family", "lam", "alpha", "A" [N, d, d], "b" [N, d], "x0" [N, d]} (float32)."""
    return _core.sample_task(_config(cfg), role, int(seed_index))


# ---- a learned optimizer on your arrays -------------------------------------------------------------------
class LearnedOptimizer:
    """A trained learned optimizer applied to numpy float32 arrays.

    step(params, grads) updates params in place (one array, or a list of arrays) with the learned
    update, keeping each coordinate's recurrent state between calls; reset() forgets that state.
    adapt(objective, x0, K) returns a copy whose weights took K adaptation steps on your problem.
    """

    STATE_FLOATS = _core.COORD_STATE_FLOATS

    def __init__(self, weights):
        if not isinstance(weights, _core.Weights):
            raise TypeError("LearnedOptimizer(weights): use LearnedOptimizer.load(path)")
        self._w = weights
        self.skipped = 0
        self.reset()

    @classmethod
    def load(cls, path):
        return cls(_core.Weights.load(os.fspath(path)))

    @classmethod
    def init(cls, arch="rnnprop", seed=0):
        """Untrained weights (the engine's initialisation for this seed)."""
        return cls(_core.Weights.init(arch, int(seed)))

    def save(self, path):
        self._w.save(os.fspath(path))

    @property
    def arch(self):
        return self._w.arch

    @property
    def weights(self):
        return self._w.weights

    def reset(self):
        self._state = None  # one float32 [n, STATE_FLOATS] array per parameter array
        self.k = 0  # updates taken

    def step(self, params, grads):
        single = isinstance(params, np.ndarray)
        ps = [params] if single else list(params)
        gs = [grads] if single else list(grads)
        if len(ps) != len(gs):
            raise ValueError(f"grads: {len(gs)} arrays for {len(ps)} parameter arrays")
        for i, p in enumerate(ps):
            if not isinstance(p, np.ndarray):
                raise ValueError(f"params[{i}]: expected a numpy float32 array, got {type(p).__name__}")
        sizes = [p.size for p in ps]
        if self._state is None:
            self._state = [np.zeros((n, self.STATE_FLOATS), np.float32) for n in sizes]
        elif [s.shape[0] for s in self._state] != sizes:
            raise ValueError(f"params: sizes {sizes} differ from those of the first step "
                             f"{[s.shape[0] for s in self._state]}; call reset() for new parameters")
        self.k += 1
        for i, (p, g, s) in enumerate(zip(ps, gs, self._state)):
            name = "" if single else f"[{i}]"
            try:
                _core.step(self._w, p, g, s, self.k)
            except ValueError as e:
                raise ValueError(str(e).replace("params:", f"params{name}:", 1)
                                 .replace("grads:", f"grads{name}:", 1)) from None
        return params

    def adapt(self, objective, x0, K=5, lr=1e-3, unroll=20, trajectory=100,
              beta1=0.9, beta2=0.999, eps=1e-8):
        """K adaptation steps of the weights on your problem (M-L2O's test-time adaptation).

        objective(x) takes a float32 numpy vector and returns (loss, grad), as numbers and arrays
        or as torch tensors (a grad that requires grad is detached). Each step is an Adam update
        of the weights from the meta-gradient of an `unroll`-step run of this optimizer from the
        current point (the gradient treated as a constant input: only grad is needed); runs
        restart from x0 every `trajectory` steps. Returns a new LearnedOptimizer; .skipped counts
        non-finite updates that were skipped."""
        x0 = np.ascontiguousarray(np.asarray(x0, dtype=np.float32).ravel())

        def plain(x):  # torch results as numbers and numpy arrays
            r = objective(x)
            if isinstance(r, tuple) and len(r) == 2:
                loss, grad = r
                if hasattr(loss, "detach"):
                    loss = loss.detach().cpu().item()
                if hasattr(grad, "detach"):
                    grad = grad.detach().cpu().numpy()
                return loss, grad
            return r

        w, skipped = _core.adapt_external(self._w, x0, plain, int(K), float(lr), float(beta1),
                                          float(beta2), float(eps), int(unroll), int(trajectory))
        opt = LearnedOptimizer(w)
        opt.skipped = skipped
        return opt

    def __repr__(self):
        return f"<ml2o.LearnedOptimizer {self.arch}, {self.weights.size} weights>"
