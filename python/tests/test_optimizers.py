"""A learned optimizer on the user's arrays and models: numpy and torch reproduce the engine's
evaluation trajectory on a LASSO instance, adaptation runs on a user's objective, and the torch
optimizer trains an MLP on digits."""
import numpy as np
import pytest
import torch

import ml2o
import ml2o.torch

LASSO = {
    "run": {"seed": 3, "backend": "cpu"},
    "arms": {"direct_transfer": False, "transfer_learning": False, "ml2o": False},
    "eval": {"steps": 100, "seeds": 1,
             "task": {"family": "lasso", "dim": 10, "instances": 8, "sigma": 1.0, "lam": 0.005}},
}


def lasso_grad(task, x):
    r = np.einsum("nij,nj->ni", task["A"], x) - task["b"]
    return np.einsum("nij,ni->nj", task["A"], r) + task["lam"] * np.sign(x)


def lasso_mean_objective(task, x):
    r = np.einsum("nij,nj->ni", task["A"].astype(np.float64), x) - task["b"]
    return float(np.mean(0.5 * np.sum(r * r, axis=1) + task["lam"] * np.abs(x).sum(axis=1)))


class Lasso(torch.nn.Module):
    """The engine's LASSO instances as a torch module: the sum of the instances' objectives, so
    each instance's coordinates see their own gradient, as in the engine."""

    def __init__(self, task):
        super().__init__()
        self.A = torch.from_numpy(task["A"])
        self.b = torch.from_numpy(task["b"])
        self.lam = task["lam"]
        self.x = torch.nn.Parameter(torch.from_numpy(task["x0"].copy()))

    def forward(self):
        r = torch.einsum("nij,nj->ni", self.A, self.x) - self.b
        return 0.5 * (r * r).sum() + self.lam * self.x.abs().sum()


@pytest.fixture(scope="module")
def lasso():
    cfg = ml2o.load_config(LASSO)
    return cfg, ml2o.sample_task(cfg)


@pytest.mark.parametrize("arch", ["rnnprop", "dmlstm"])
def test_numpy_optimizer_reproduces_the_engines_trajectory(lasso, arch):
    cfg, task = lasso
    opt = ml2o.LearnedOptimizer.init(arch, seed=4)
    if arch == "dmlstm":
        cfg = ml2o.load_config({**LASSO, "optimizer": {"arch": "dmlstm"}})
    engine = ml2o.evaluate(cfg, opt)[0]
    x = task["x0"].copy()
    got = [lasso_mean_objective(task, x)]
    for _ in range(100):
        opt.step(x, lasso_grad(task, x).astype(np.float32))
        got.append(lasso_mean_objective(task, x))
    assert engine[-1] < 0.9 * engine[0] or arch == "dmlstm"  # it moves (the check is not vacuous)
    np.testing.assert_allclose(got, engine, rtol=1e-5)


def test_torch_optimizer_reproduces_the_engines_trajectory(lasso):
    cfg, task = lasso
    weights = ml2o.LearnedOptimizer.init("rnnprop", seed=4)
    engine = ml2o.evaluate(cfg, weights)[0]
    model = Lasso(task)
    opt = ml2o.torch.L2O(model.parameters(), weights=weights)
    n = task["x0"].shape[0]
    got = []
    for _ in range(100):
        loss = model()
        got.append(loss.item() / n)
        opt.zero_grad()
        loss.backward()
        opt.step()
    got.append(model().item() / n)
    np.testing.assert_allclose(got, engine, rtol=1e-5)


def test_torch_state_dict_resumes_exactly(lasso):
    _, task = lasso
    weights = ml2o.LearnedOptimizer.init("rnnprop", seed=4)

    def steps(model, opt, k):
        for _ in range(k):
            opt.zero_grad()
            model().backward()
            opt.step()

    a = Lasso(task)
    opt_a = ml2o.torch.L2O(a.parameters(), weights=weights)
    steps(a, opt_a, 20)
    b = Lasso(task)
    opt_b = ml2o.torch.L2O(b.parameters(), weights=weights)
    steps(b, opt_b, 10)
    saved = opt_b.state_dict()
    b2 = Lasso(task)
    b2.load_state_dict(b.state_dict())
    opt_b2 = ml2o.torch.L2O(b2.parameters(), weights=ml2o.LearnedOptimizer.init("rnnprop", seed=99))
    opt_b2.load_state_dict(saved)  # restores the learned weights too
    steps(b2, opt_b2, 10)
    assert torch.equal(a.x, b2.x)


def test_adaptation_on_a_user_objective_changes_the_weights_and_is_deterministic(lasso):
    _, task = lasso
    start = ml2o.LearnedOptimizer.init("rnnprop", seed=4)
    n = task["x0"].shape[0]

    def objective(x):
        x = x.reshape(task["x0"].shape)
        return lasso_mean_objective(task, x) * n, lasso_grad(task, x)

    def torch_objective(x):  # the same, returning torch tensors
        loss, grad = objective(x)
        return torch.tensor(loss, dtype=torch.float64, requires_grad=True), torch.from_numpy(grad)

    a = start.adapt(objective, task["x0"], K=3, unroll=5, trajectory=10)
    b = start.adapt(torch_objective, task["x0"], K=3, unroll=5, trajectory=10)
    assert np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, start.weights)
    assert a.skipped == 0


def test_torch_adaptation_restores_the_model(lasso):
    _, task = lasso
    model = Lasso(task)
    opt = ml2o.torch.L2O(model.parameters(), weights=ml2o.LearnedOptimizer.init("rnnprop", seed=4))
    before = opt.learned.weights
    x_before = model.x.detach().clone()
    opt.adapt(lambda: model().backward() or model(), K=2, unroll=4, trajectory=8)
    assert torch.equal(model.x, x_before)
    assert not np.array_equal(opt.learned.weights, before)


def test_torch_optimizer_trains_an_mlp_on_digits(trained_params):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    opt = ml2o.torch.L2O(model.parameters(), weights=trained_params)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * losses[0], losses[::10]


# ---- bad arrays and inputs -------------------------------------------------------------------------
@pytest.fixture
def opt():
    return ml2o.LearnedOptimizer.init("rnnprop", seed=0)


def test_bad_arrays_are_refused_with_a_clear_message(opt):
    x = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="params: expected dtype float32, got float64"):
        opt.step(np.zeros(4), x)
    with pytest.raises(ValueError, match="grads: expected dtype float32, got int64"):
        opt.step(x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"grads: shape \(3,\) does not match params' \(4,\)"):
        opt.step(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="params: the array is not C-contiguous"):
        opt.step(np.zeros(8, np.float32)[::2], x)
    ro = np.zeros(4, np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="params: the array is read-only"):
        opt.step(ro, x)
    with pytest.raises(ValueError, match="params\\[0\\]: expected a numpy float32 array, got list"):
        opt.step([[0.0] * 4], [x])
    with pytest.raises(ValueError, match="grads: 1 arrays for 2 parameter arrays"):
        opt.step([x, x.copy()], [x])
    opt.step(x, x.copy())
    with pytest.raises(ValueError, match="differ from those of the first step"):
        opt.step(np.zeros(5, np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"state: shape \(4, 3\), expected \(4, 82\)"):
        ml2o._core.step(opt._w, x, x.copy(), np.zeros((4, 3), np.float32), 1)


def test_bad_objectives_are_refused(opt):
    x0 = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="objective: the gradient has 2 values for 3 parameters"):
        opt.adapt(lambda x: (0.0, np.zeros(2)), x0, K=1, unroll=2, trajectory=2)
    with pytest.raises(ValueError, match=r"objective: must return \(loss, grad\)"):
        opt.adapt(lambda x: 0.0, x0, K=1, unroll=2, trajectory=2)
    with pytest.raises(ZeroDivisionError):
        opt.adapt(lambda x: (1 / 0, x), x0, K=1, unroll=2, trajectory=2)
    with pytest.raises(ValueError, match="trajectory must be a positive multiple of the unroll"):
        opt.adapt(lambda x: (0.0, x), x0, K=1, unroll=3, trajectory=4)


def test_bad_tensors_are_refused(opt):
    with pytest.raises(ValueError, match="dtype torch.float64; ml2o.torch.L2O needs torch.float32"):
        ml2o.torch.L2O([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], weights=opt)
    with pytest.raises(ValueError, match="supports CPU tensors only"):
        ml2o.torch.L2O([torch.nn.Parameter(torch.zeros(3, device="meta"))], weights=opt)
    with pytest.raises(TypeError, match="weights: expected a params path"):
        ml2o.torch.L2O([torch.nn.Parameter(torch.zeros(3))], weights=3)
    with pytest.raises(ValueError, match="cannot|not an ml2o params file|No such file"):
        ml2o.torch.L2O([torch.nn.Parameter(torch.zeros(3))], weights="/nonexistent.params")
