#!/usr/bin/env python3
"""The ml2o meta-gradient written as a JAX user would: RNNprop (2 -> 20 ELU, two LSTM cells of
20, 0.01 tanh output) applied to every coordinate of a batch of LASSO instances, the T steps as
lax.scan, jax.value_and_grad for the meta-gradient, the whole under jax.jit.
See bench/peers/README.md."""
import os
import sys

import peer_common as pc

try:
    import jax
    import jax.numpy as jnp
    from jax import lax
except ImportError as e:
    print(f"jax_peer: JAX is not importable ({e}); skipped", file=sys.stderr)
    sys.exit(3)


def unpack(w):
    return {k: w[o:o + n].reshape(s) for k, o, n, s in pc.SLICES}


def lstm(inp, h, c, W, b):
    i, j, f, o = jnp.split(jnp.concatenate([inp, h], 1) @ W + b, 4, axis=1)
    c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(j)
    return jnp.tanh(c) * jax.nn.sigmoid(o), c


def objective(A, b, x):
    """Per-instance LASSO objective and residual."""
    r = jnp.einsum("nij,nj->ni", A, x) - b
    return 0.5 * jnp.sum(r * r, 1) + pc.LAM * jnp.sum(jnp.abs(x), 1), r


def meta_loss(w, A, b, x0, bcs):
    """sum over t = 0..T of mean f(x_t), with the step losses as auxiliary output."""
    p = unpack(w)

    def step(carry, bc):
        x, m, v, h1, c1, h2, c2 = carry
        f, r = objective(A, b, x)
        # The optimizee gradient is a constant: no derivative through it (nor the features).
        g = lax.stop_gradient(jnp.einsum("nij,ni->nj", A, r) + pc.LAM * jnp.sign(x)).reshape(-1)
        m = pc.BETA * m + (1 - pc.BETA) * g
        v = pc.BETA * v + (1 - pc.BETA) * g * g
        s = jnp.sqrt(v / bc) + pc.EPS
        u = jnp.stack([m / bc / s, g / s], 1)
        z = jax.nn.elu(u @ p["W_in"] + p["b_in"])
        h1, c1 = lstm(z, h1, c1, p["W1"], p["b1"])
        h2, c2 = lstm(h1, h2, c2, p["W2"], p["b2"])
        delta = pc.SCALE * jnp.tanh(h2 @ p["W_out"] + p["b_out"])
        return (x + delta.reshape(x.shape), m, v, h1, c1, h2, c2), jnp.mean(f)

    C = x0.size
    zeros, hidden = jnp.zeros(C, x0.dtype), jnp.zeros((C, pc.HIDDEN), x0.dtype)
    carry, losses = lax.scan(step, (x0, zeros, zeros, hidden, hidden, hidden, hidden), bcs)
    losses = jnp.append(losses, jnp.mean(objective(A, b, carry[0])[0]))
    return jnp.sum(losses), losses


grad_fn = jax.jit(jax.value_and_grad(meta_loss, has_aux=True))


def main():
    args = pc.parse_args("JAX", ["jit"])
    platform = "gpu" if args.device == "cuda" else "cpu"
    try:
        dev = jax.devices(platform)[0]
    except RuntimeError as e:
        print(f"jax_peer: no JAX {platform} device ({e}); skipped", file=sys.stderr)
        sys.exit(3)
    if args.threads and args.threads != len(os.sched_getaffinity(0)):
        print(f"jax_peer: XLA's CPU thread pool follows the CPU affinity "
              f"({len(os.sched_getaffinity(0))} cores; run.sh pins it with taskset), not "
              f"--threads {args.threads}", file=sys.stderr)

    def gradient(w, A, b, x0, T):
        put = lambda a: jax.device_put(jnp.asarray(a), dev)  # noqa: E731
        ins = [put(a) for a in (w, A, b, x0)] + [put(jnp.asarray(pc.bias_corrections(T),
                                                                 jnp.float32))]

        def call():
            (L, losses), g = grad_fn(*ins)
            return jax.block_until_ready((L, losses, g))
        return call

    case = pc.load_case(args.case)
    # Full float32 matmuls for the check (on GPUs JAX's default precision is TF32-like).
    with jax.default_matmul_precision("highest"):
        L, losses, g = gradient(case["w"], case["A"], case["b"], case["x0"], case["meta"]["T"])()
    res = pc.check("jax", case, float(L), losses, g)
    if not res["ok"]:
        sys.exit(1)
    if args.check_only:
        return
    name = dev.device_kind if platform == "gpu" else pc.cpu_name()
    import jaxlib
    rec = pc.base_record("jax", args, name, {"jax": jax.__version__, "jaxlib": jaxlib.__version__},
                         len(os.sched_getaffinity(0)))
    rec["matmul"] = "tf32" if args.tf32 else "fp32"
    rec["check_grad_err_engine"] = res["engine"]["grad"]
    rec["check_grad_err_oracle"] = res["oracle"]["grad"]
    precision = "default" if args.tf32 else "highest"

    def time_size(n):
        A, b, x0 = pc.random_task(n)
        call = gradient(case["w"], A, b, x0, args.T)
        with jax.default_matmul_precision(precision):
            return pc.time_calls(call, args.min_s)

    def is_oom(e):
        return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()

    sys.exit(2 if pc.run_sizes(args, rec, time_size, is_oom) else 0)


if __name__ == "__main__":
    main()
