#!/usr/bin/env python3
"""Trains routewatch's LSTM forecaster on simulator data and exports it as ONNX.

The model reads one router's ten metrics, normalised per router by running statistics (the
same arithmetic as `plugins/lstm/src/normalize.rs`), and forecasts the next sample of each:

    x_t (10) -> LSTM (hidden 32) -> h_t -> forecast_{t+1} = x_t + h_t W_o + b_o

The residual connection makes "no change" the starting point, so the network only learns the
correction (mean reversion, the daily cycle, the coupling between traffic, CPU and temperature).

Why not PyTorch: only PyPI is reachable here and the torch wheel is about 800 MB. A 32-unit LSTM
trains in a couple of minutes with `autograd` (a small, pure-Python automatic differentiation
library over numpy) and plain Adam; the ONNX graph is written with the `onnx` package using
ONNX's own LSTM operator and checked against onnxruntime before it is saved.

Usage (from the repository root):
    python3 -m venv .venv && .venv/bin/pip install -r plugins/lstm/train/requirements.txt
    .venv/bin/python plugins/lstm/train/train.py

It runs the simulator (fault-free, seed 7, 64 routers x 4 days at 60 s) unless `--data` names an
existing file, trains with a fixed seed, writes `plugins/lstm/model/lstm.onnx`, the reference
fixture `plugins/lstm/tests/fixtures/onnx_reference.json` and prints the validation figures
recorded in this folder's README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import autograd.numpy as anp
import numpy as np
import onnx
import onnxruntime as ort
from autograd import grad
from onnx import TensorProto, helper, numpy_helper

# Feature order: fixed, shared with plugins/lstm/src/lib.rs (FEATURES).
FEATURES = [
    "cpu_util", "mem_util", "temp_c", "fan_rpm", "latency_ms",
    "loss_ratio", "rx_bps", "tx_bps", "if_errors", "bgp_up",
]
HIDDEN = 32
# Normaliser constants: shared with plugins/lstm/src/normalize.rs.
NORM_WARMUP = 60
NORM_ALPHA = 1.0 / 1440.0
REL_FLOOR = 0.01
ABS_FLOOR = 1e-9
CLIP = 8.0

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PLUGIN = os.path.join(ROOT, "plugins", "lstm")


def simulate(path: str, routers: int, days: int, seed: int) -> None:
    cmd = [
        "cargo", "run", "--release", "--quiet", "-p", "routewatch-simulator", "--",
        "--mode", "fast", "--routers", str(routers), "--interval", "60s", "--duration", f"{days}d",
        "--seed", str(seed), "--fault-rate", "0", "--no-api", "--out", path,
    ]
    print("running", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT)


def load(path: str) -> np.ndarray:
    """Records as an array [routers, time, features], in file order per router."""
    series: dict[str, list[list[float]]] = {}
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            series.setdefault(rec["router"], []).append([rec["metrics"][m] for m in FEATURES])
    names = sorted(series)
    length = min(len(series[n]) for n in names)
    return np.array([series[n][:length] for n in names], dtype=np.float64)


def normalise(x: np.ndarray) -> np.ndarray:
    """Per-router running normalisation, step by step, exactly as the plugin does it.

    Returns z (unclipped) with the same shape as x. z at t uses the statistics from before t.
    """
    routers, steps, feats = x.shape
    mean = x[:, 0, :].copy()
    var = np.zeros((routers, feats))
    z = np.zeros_like(x)
    for t in range(1, steps):
        v = x[:, t, :]
        sd = np.maximum(np.maximum(np.sqrt(var), REL_FLOOR * np.abs(mean)), ABS_FLOOR)
        z[:, t, :] = (v - mean) / sd
        n = t + 1  # samples seen including this one
        d = v - mean
        if n <= NORM_WARMUP:
            mean = mean + d / n
            var = var + (d * (v - mean) - var) / n
        else:
            mean = mean + NORM_ALPHA * d
            var = (1.0 - NORM_ALPHA) * (var + NORM_ALPHA * d * d)
    return z


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    i, h, f = len(FEATURES), HIDDEN, len(FEATURES)
    scale = 1.0 / np.sqrt(h)
    b = np.zeros(4 * h)
    b[2 * h:3 * h] = 1.0  # forget gate bias (ONNX gate order i, o, f, c)
    return {
        "wx": rng.uniform(-scale, scale, (i, 4 * h)),
        "wh": rng.uniform(-scale, scale, (h, 4 * h)),
        "b": b,
        "wo": rng.uniform(-scale, scale, (h, f)) * 0.1,
        "bo": np.zeros(f),
    }


def sigmoid(v):
    return 0.5 * (anp.tanh(0.5 * v) + 1.0)


def lstm_step(p, x, h, c):
    """One step of ONNX's LSTM (gates i, o, f, c; default activations)."""
    gates = anp.dot(x, p["wx"]) + anp.dot(h, p["wh"]) + p["b"]
    n = HIDDEN
    i = sigmoid(gates[:, 0:n])
    o = sigmoid(gates[:, n:2 * n])
    f = sigmoid(gates[:, 2 * n:3 * n])
    g = anp.tanh(gates[:, 3 * n:4 * n])
    c = f * c + i * g
    h = o * anp.tanh(c)
    return h, c


def forecast(p, x, h):
    return x + anp.dot(h, p["wo"]) + p["bo"]


def loss_fn(p, xs, burn_in):
    """Mean squared one-step error over a batch of sequences [batch, time, features]."""
    batch, steps, _ = xs.shape
    h = anp.zeros((batch, HIDDEN))
    c = anp.zeros((batch, HIDDEN))
    total = 0.0
    for t in range(steps - 1):
        h, c = lstm_step(p, xs[:, t, :], h, c)
        if t >= burn_in:
            err = forecast(p, xs[:, t, :], h) - xs[:, t + 1, :]
            total = total + anp.mean(err * err)
    return total / (steps - 1 - burn_in)


def run_stateful(p, zc: np.ndarray) -> np.ndarray:
    """Forecasts for every step of full series [routers, time, features] (state carried)."""
    routers, steps, feats = zc.shape
    h = np.zeros((routers, HIDDEN))
    c = np.zeros((routers, HIDDEN))
    out = np.zeros_like(zc)
    for t in range(steps):
        h, c = lstm_step(p, zc[:, t, :], h, c)
        out[:, t, :] = forecast(p, zc[:, t, :], h)
    return out


def train(p, zc: np.ndarray, rng: np.random.Generator, iterations: int, batch: int, seq: int, burn_in: int):
    gradient = grad(loss_fn)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    s = {k: np.zeros_like(v) for k, v in p.items()}
    lr, b1, b2, eps = 3e-3, 0.9, 0.999, 1e-8
    routers, steps, _ = zc.shape
    for it in range(1, iterations + 1):
        r = rng.integers(0, routers, batch)
        t0 = rng.integers(NORM_WARMUP, steps - seq, batch)
        xs = np.stack([zc[ri, ti:ti + seq, :] for ri, ti in zip(r, t0)])
        g = gradient(p, xs, burn_in)
        rate = lr * (0.1 if it > 0.8 * iterations else 1.0)
        for k in p:
            gk = np.clip(g[k], -1.0, 1.0)
            m[k] = b1 * m[k] + (1 - b1) * gk
            s[k] = b2 * s[k] + (1 - b2) * gk * gk
            mh = m[k] / (1 - b1 ** it)
            sh = s[k] / (1 - b2 ** it)
            p[k] = p[k] - rate * mh / (np.sqrt(sh) + eps)
        if it % 100 == 0:
            print(f"iteration {it}: batch loss {loss_fn(p, xs, burn_in):.4f}", file=sys.stderr)
    return p


def export(p, path: str) -> None:
    h, i, f = HIDDEN, len(FEATURES), len(FEATURES)
    w = p["wx"].T.reshape(1, 4 * h, i).astype(np.float32)
    r = p["wh"].T.reshape(1, 4 * h, h).astype(np.float32)
    b = np.concatenate([p["b"], np.zeros(4 * h)]).reshape(1, 8 * h).astype(np.float32)
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "hn", "cn"], hidden_size=h),
        helper.make_node("MatMul", ["hn", "Wo"], ["proj"]),
        helper.make_node("Add", ["proj", "bo"], ["delta"]),
        helper.make_node("Add", ["x", "delta"], ["forecast"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(r, "R"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(p["wo"].astype(np.float32), "Wo"),
        numpy_helper.from_array(p["bo"].astype(np.float32), "bo"),
    ]
    # One step (seq_len 1) for a batch of routers; `batch` is symbolic.
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "batch", i]),
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", h]),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "batch", h]),
    ]
    outputs = [
        helper.make_tensor_value_info("forecast", TensorProto.FLOAT, [1, "batch", f]),
        helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "batch", h]),
        helper.make_tensor_value_info("cn", TensorProto.FLOAT, [1, "batch", h]),
    ]
    graph = helper.make_graph(nodes, "routewatch_lstm", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="routewatch-train")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def onnx_steps(path: str, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs the exported model step by step over xs [steps, batch, features], feeding h, c back."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    steps, batch, _ = xs.shape
    h = np.zeros((1, batch, HIDDEN), np.float32)
    c = np.zeros((1, batch, HIDDEN), np.float32)
    outs, hs, cs = [], [], []
    for t in range(steps):
        fc, h, c = sess.run(None, {"x": xs[t:t + 1].astype(np.float32), "h0": h, "c0": c})
        outs.append(fc[0])
        hs.append(h[0])
        cs.append(c[0])
    return np.array(outs), np.array(hs), np.array(cs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "target", "lstm-train", "train.jsonl"))
    ap.add_argument("--routers", type=int, default=64)
    ap.add_argument("--days", type=int, default=4)
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=48)
    ap.add_argument("--burn-in", type=int, default=16)
    ap.add_argument("--validation-routers", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(PLUGIN, "model", "lstm.onnx"))
    ap.add_argument("--fixture", default=os.path.join(PLUGIN, "tests", "fixtures", "onnx_reference.json"))
    args = ap.parse_args()

    if not os.path.exists(args.data):
        os.makedirs(os.path.dirname(args.data), exist_ok=True)
        simulate(args.data, args.routers, args.days, args.sim_seed)
    started = time.time()
    x = load(args.data)
    z = normalise(x)
    zc = np.clip(z, -CLIP, CLIP)
    n_val = args.validation_routers
    train_z, val_z = zc[:-n_val], zc[-n_val:]
    print(f"data: {x.shape[0]} routers x {x.shape[1]} samples; training on {train_z.shape[0]}, "
          f"validating on {val_z.shape[0]} other routers", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    p = train(init_params(rng), train_z, rng, args.iterations, args.batch, args.seq, args.burn_in)

    # Validation: stateful one-step forecasts over the held-out routers' whole series, after
    # the normaliser's warm-up, against persistence (forecast = last value).
    fc = run_stateful(p, val_z)
    sl = slice(NORM_WARMUP, -1)
    model_mse = np.mean((fc[:, sl, :] - val_z[:, NORM_WARMUP + 1:, :]) ** 2, axis=(0, 1))
    naive_mse = np.mean((val_z[:, sl, :] - val_z[:, NORM_WARMUP + 1:, :]) ** 2, axis=(0, 1))
    figures = {
        "model_mse": float(model_mse.mean()),
        "persistence_mse": float(naive_mse.mean()),
        "per_metric": {m: [round(float(a), 4), round(float(b), 4)] for m, a, b in zip(FEATURES, model_mse, naive_mse)},
    }

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    export(p, args.out)

    # The exported graph must compute what was trained.
    probe = val_z[:, NORM_WARMUP:NORM_WARMUP + 32, :].transpose(1, 0, 2)
    ort_fc, _, _ = onnx_steps(args.out, probe)
    np_fc = run_stateful(p, probe.transpose(1, 0, 2)).transpose(1, 0, 2)
    figures["onnx_vs_numpy_max_abs"] = float(np.max(np.abs(ort_fc - np_fc)))
    assert figures["onnx_vs_numpy_max_abs"] < 1e-3, figures

    # Fixture for the Rust test: fixed inputs, onnxruntime's outputs (state fed back per step).
    fix_rng = np.random.default_rng(1234)
    fix_x = np.clip(fix_rng.normal(0.0, 1.5, (6, 5, len(FEATURES))), -CLIP, CLIP).astype(np.float32)
    fix_fc, fix_h, fix_c = onnx_steps(args.out, fix_x)
    os.makedirs(os.path.dirname(args.fixture), exist_ok=True)
    with open(args.fixture, "w") as f:
        json.dump({
            "about": "Made by plugins/lstm/train/train.py: onnxruntime outputs of lstm.onnx for fixed inputs, "
                     "h and c fed back step by step. Shapes: [steps][batch][features or hidden].",
            "onnxruntime": ort.__version__,
            "x": fix_x.tolist(),
            "forecast": fix_fc.tolist(),
            "h": fix_h.tolist(),
            "c": fix_c.tolist(),
        }, f)

    figures["seconds"] = round(time.time() - started, 1)
    figures["model_bytes"] = os.path.getsize(args.out)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
