"""What the PyTorch and JAX peers share: the command line, the exported case, the check against
the engine, the timing loop and the JSON lines. The math itself lives in each peer."""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

# RNNprop's flat weight layout (include/ml2o/cell.hpp RnnpropLayout): name -> (offset, shape).
HIDDEN = 20
LAYOUT = {
    "W_in": (0, (2, HIDDEN)),
    "b_in": (40, (HIDDEN,)),
    "W1": (60, (2 * HIDDEN, 4 * HIDDEN)),
    "b1": (3260, (4 * HIDDEN,)),
    "W2": (3340, (2 * HIDDEN, 4 * HIDDEN)),
    "b2": (6540, (4 * HIDDEN,)),
    "W_out": (6620, (HIDDEN, 1)),
    "b_out": (6640, (1,)),
}
# The same as (name, offset, size, shape) tuples: plain ints that tracing compilers see as constants.
SLICES = [(k, o, math.prod(s), s) for k, (o, s) in LAYOUT.items()]
N_WEIGHTS = 6641
BETA, EPS, SCALE, LAM = 0.95, 1e-8, 0.01, 0.005

# Tolerances of the check, normalised errors (||peer - ref|| / ||ref||) in float32.
GRAD_TOL, LOSS_TOL = 1e-4, 1e-5


def bias_corrections(T, k0=1):
    """1 - beta^k for the global steps k0 .. k0 + T - 1, rounded as the engine rounds them."""
    return [float(np.float32(1.0) - np.float32(BETA ** k)) for k in range(k0, k0 + T)]


def parse_args(peer, modes, add_more=None):
    p = argparse.ArgumentParser(
        description=f"{peer} peer of the ml2o engine: RNNprop meta-gradient on LASSO d = 10. "
        "Checks the exported case, then times the meta-gradient; JSON lines on stdout.")
    p.add_argument("--case", required=True, help="directory written by `peer_case export`")
    p.add_argument("--mode", choices=modes, default=modes[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--sizes", default="120,1020,8190,65530",
                   help="comma-separated coordinate counts (instances = size // 10)")
    p.add_argument("--T", type=int, default=20)
    p.add_argument("--min-s", type=float, default=1.0, help="least timed seconds per size")
    p.add_argument("--budget-s", type=float, default=600.0,
                   help="skip the remaining sizes once this many seconds have passed since start")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: the library's default)")
    p.add_argument("--tf32", action="store_true",
                   help="time with TF32 matmuls (GPU); the check always runs in full float32")
    p.add_argument("--check-only", action="store_true")
    if add_more:
        add_more(p)
    a = p.parse_args()
    try:
        a.sizes = [int(s) for s in a.sizes.split(",")]
        if not a.sizes or min(a.sizes) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--sizes must be positive integers separated by commas, not '{a.sizes}'")
    return a


def load_case(path):
    def npy(name):
        return np.load(os.path.join(path, name))
    with open(os.path.join(path, "case.json")) as f:
        meta = json.load(f)
    if meta["arch"] != "rnnprop" or meta["family"] != "lasso" or meta["lam"] != LAM:
        sys.exit(f"{path}/case.json: expected arch rnnprop, family lasso, lam {LAM}")
    return {
        "meta": meta, "w": npy("weights.npy"), "A": npy("A.npy"), "b": npy("b.npy"),
        "x0": npy("x0.npy"),
        "engine": (meta["engine_meta_loss"], npy("engine_step_loss.npy"), npy("engine_grad.npy")),
        "oracle": (meta["oracle_meta_loss"], npy("oracle_step_loss.npy"), npy("oracle_grad.npy")),
    }


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check(label, case, meta_loss, step_loss, grad):
    """Prints the peer's errors against the engine's float result and the double oracle; returns
    them, with ok = every error within tolerance."""
    out = {"ok": True}
    for ref in ("engine", "oracle"):
        L, steps, g = case[ref]
        e = {"meta_loss": rel(meta_loss, L), "step_loss": rel(step_loss, steps), "grad": rel(grad, g)}
        ok = e["meta_loss"] <= LOSS_TOL and e["step_loss"] <= LOSS_TOL and e["grad"] <= GRAD_TOL
        out["ok"] &= ok
        out[ref] = e
        print(f"{label}: vs {ref:6s}: meta-loss {e['meta_loss']:.2e}, step losses "
              f"{e['step_loss']:.2e}, gradient {e['grad']:.2e} (normalised; tolerance "
              f"{LOSS_TOL:.0e} / {GRAD_TOL:.0e}) {'ok' if ok else 'FAILED'}", file=sys.stderr)
    return out


def random_task(instances, d=10, seed=0):
    """A LASSO task of the paper's training distribution (sigma 1): the timing does not depend on the values."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((instances, d, d), dtype=np.float32)
    b = rng.random((instances, d), dtype=np.float32)
    x0 = (0.01 * rng.standard_normal((instances, d))).astype(np.float32)
    return A, b, x0


def time_calls(fn, min_s):
    """Warm-up (compile included) twice, then calls until >= 3 and >= min_s seconds. Returns the
    median wall seconds, the number of calls, the first call's seconds and the median CPU
    seconds of the process per call (all threads: with one thread it is the work done,
    whatever else shares the machine)."""
    t0 = time.perf_counter()
    fn()
    warm = time.perf_counter() - t0
    fn()
    wall, cpu = [], []
    while len(wall) < 3 or (sum(wall) < min_s and len(wall) < 2000):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), len(wall), warm, statistics.median(cpu)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def emit(record):
    print(json.dumps(record), flush=True)


def base_record(peer, args, device_name, versions, threads):
    return {"bench": "peers", "peer": peer, "device": args.device, "device_name": device_name,
            "T": args.T, "d": 10, "threads": threads,
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "numpy": np.__version__, **versions}


START = time.perf_counter()  # --budget-s counts from here: imports, check and compile included


def run_sizes(args, record, time_size, is_oom):
    """Times every size; a size that fails is reported as a JSON line and, when it ran out of
    memory, the larger sizes are skipped. Returns the number of failed sizes."""
    failed, skip = 0, None
    for size in args.sizes:
        n = max(1, size // 10)
        r = dict(record, coordinates=n * 10, instances=n)
        if skip is None and time.perf_counter() - START > args.budget_s:
            skip = f"time budget of {args.budget_s:.0f} s spent"
        if skip:
            emit(dict(r, skipped=skip))
            continue
        try:
            s, repeats, warm, cpu_s = time_size(n)
        except Exception as e:  # out of memory, say: report, go on with the next size
            failed += 1
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            print(f"{record['peer']}: {n * 10} coordinates failed: {msg}", file=sys.stderr)
            emit(dict(r, error=msg))
            if is_oom(e):
                skip = f"out of memory at {n * 10} coordinates"
            continue
        emit(dict(r, ms_per_iter=s * 1e3, coord_steps_per_s=n * 10 * args.T / s,
                  repeats=repeats, warmup_s=warm, cpu_ms_per_iter=cpu_s * 1e3))
    return failed
