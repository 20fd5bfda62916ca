#!/usr/bin/env python3
"""The ml2o meta-gradient written as a PyTorch user would: RNNprop (2 -> 20 ELU, two LSTM cells
of 20, 0.01 tanh output) applied to every coordinate of a batch of LASSO instances, T steps,
autograd for the meta-gradient. --mode eager, or compile (torch.compile of the whole meta-loss,
or with --compile-scope step of one optimizer step). See bench/peers/README.md."""
import sys

import peer_common as pc

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"torch_peer: PyTorch is not importable ({e}); skipped", file=sys.stderr)
    sys.exit(3)


def unpack(w):
    """Views of the flat weight vector: the gradient lands in the engine's layout."""
    return {k: w[o:o + n].view(s) for k, o, n, s in pc.SLICES}


def lstm(inp, h, c, W, b):
    i, j, f, o = torch.addmm(b, torch.cat([inp, h], 1), W).chunk(4, 1)
    c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(j)
    return torch.tanh(c) * torch.sigmoid(o), c


def objective(A, b, x):
    """Per-instance LASSO objective and residual."""
    r = torch.bmm(A, x.unsqueeze(2)).squeeze(2) - b
    return 0.5 * (r * r).sum(1) + pc.LAM * x.abs().sum(1), r


def step(p, A, b, x, state, bc):
    """f(x) averaged over instances, and one optimizer step of every coordinate. The optimizee
    gradient is a constant (no derivative through it), so the features carry none either."""
    m, v, h1, c1, h2, c2 = state
    f, r = objective(A, b, x)
    with torch.no_grad():
        g = (torch.bmm(A.transpose(1, 2), r.unsqueeze(2)).squeeze(2) + pc.LAM * torch.sign(x))
        g = g.reshape(-1)
        m = pc.BETA * m + (1 - pc.BETA) * g
        v = pc.BETA * v + (1 - pc.BETA) * g * g
        s = torch.sqrt(v / bc) + pc.EPS
        u = torch.stack([m / bc / s, g / s], 1)
    z = F.elu(torch.addmm(p["b_in"], u, p["W_in"]))
    h1, c1 = lstm(z, h1, c1, p["W1"], p["b1"])
    h2, c2 = lstm(h1, h2, c2, p["W2"], p["b2"])
    delta = pc.SCALE * torch.tanh(torch.addmm(p["b_out"], h2, p["W_out"]))
    return f.mean(), x + delta.view_as(x), (m, v, h1, c1, h2, c2)


def meta_loss(w, A, b, x0, bcs, step_fn):
    """sum over t = 0..T of mean f(x_t), and the step losses."""
    p = unpack(w)
    C = x0.numel()
    zeros = x0.new_zeros(C)
    hidden = x0.new_zeros(C, pc.HIDDEN)
    state = (zeros, zeros, hidden, hidden, hidden, hidden)
    x, losses = x0, []
    for bc in bcs:
        f, x, state = step_fn(p, A, b, x, state, bc)
        losses.append(f)
    losses.append(objective(A, b, x)[0].mean())
    losses = torch.stack(losses)
    return losses.sum(), losses


def main():
    def more(p):
        p.add_argument("--compile-scope", choices=["unroll", "step"], default="unroll",
                       help="compile mode: torch.compile the whole T-step meta-loss, or one step")
        p.add_argument("--compile-shapes", choices=["dynamic", "static"], default="dynamic",
                       help="compile mode: one compile with the batch size dynamic, or one "
                       "compile per size")
    args = pc.parse_args("PyTorch", ["eager", "compile"], more)
    scope = args.compile_scope
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_peer: --device cuda but torch sees no CUDA device; skipped", file=sys.stderr)
        sys.exit(3)
    dev = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32 for the check, like the engine
    step_fn, loss_fn = step, meta_loss
    if args.mode == "compile":
        # static: dynamic=False recompiles for every new batch size (the size of a real run is
        # fixed); dynamic: the batch axis of the inputs is marked dynamic below.
        dynamic = False if args.compile_shapes == "static" else None
        if scope == "step":
            step_fn = torch.compile(step, dynamic=dynamic)
        else:
            loss_fn = torch.compile(meta_loss, dynamic=dynamic)
    peer = "torch-eager" if args.mode == "eager" else "torch-compile"

    def gradient(w_np, A_np, b_np, x0_np, T):
        w = torch.tensor(w_np, device=dev, requires_grad=True)
        A, b, x0 = (torch.tensor(a, device=dev) for a in (A_np, b_np, x0_np))
        if args.mode == "compile" and args.compile_shapes == "dynamic":
            for a in (A, b, x0):  # the batch size only: one compile serves every size
                torch._dynamo.mark_dynamic(a, 0)
        bcs = pc.bias_corrections(T)

        def call():
            L, losses = loss_fn(w, A, b, x0, bcs, step_fn)
            (g,) = torch.autograd.grad(L, w)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return L, losses, g
        return call

    case = pc.load_case(args.case)
    L, losses, g = gradient(case["w"], case["A"], case["b"], case["x0"], case["meta"]["T"])()
    res = pc.check(peer, case, L.item(), losses.detach().cpu().numpy(), g.cpu().numpy())
    if not res["ok"]:
        sys.exit(1)
    if args.check_only:
        return
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else pc.cpu_name()
    rec = pc.base_record(peer, args, name, {"torch": torch.__version__}, torch.get_num_threads())
    rec["matmul"] = "tf32" if args.tf32 else "fp32"
    rec["check_grad_err_engine"] = res["engine"]["grad"]
    rec["check_grad_err_oracle"] = res["oracle"]["grad"]
    if args.mode == "compile":
        rec["compile_scope"] = scope
        rec["compile_shapes"] = args.compile_shapes

    def time_size(n):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        A, b, x0 = pc.random_task(n)
        return pc.time_calls(gradient(case["w"], A, b, x0, args.T), args.min_s)

    def is_oom(e):
        return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()

    sys.exit(2 if pc.run_sizes(args, rec, time_size, is_oom) else 0)


if __name__ == "__main__":
    main()
