"""Reference fits for the ARIMA detector's agreement test.

Simulates a few ARIMA series with a fixed seed, fits each at its true order with statsmodels
(exact maximum likelihood), and writes the series and the fitted parameters to
fixtures.json. The Rust test `reference_agreement` fits the same series by conditional sum of
squares and must agree within the tolerances it states.

Run once, from this folder:  python3 make_fixtures.py   (statsmodels 0.14, numpy)
"""

import json

import numpy as np
import statsmodels
from statsmodels.tsa.arima.model import ARIMA

CASES = [
    # name, (p, d, q), mean, ar, ma
    ("ar1_mean", (1, 0, 0), 20.0, [0.7], []),
    ("arma21_mean", (2, 0, 1), 5.0, [0.5, -0.3], [0.4]),
    ("arima111", (1, 1, 1), 0.0, [0.6], [0.3]),
    ("ma2", (0, 0, 2), -3.0, [], [0.5, 0.25]),
]
N = 2000
BURN = 300


def simulate(rng, ar, ma, n):
    e = rng.standard_normal(n + BURN)
    w = np.zeros(n + BURN)
    for t in range(n + BURN):
        w[t] = e[t]
        for i, a in enumerate(ar):
            if t > i:
                w[t] += a * w[t - 1 - i]
        for j, m in enumerate(ma):
            if t > j:
                w[t] += m * e[t - 1 - j]
    return w[BURN:]


def main():
    rng = np.random.default_rng(20261124)
    out = {"generator": f"statsmodels {statsmodels.__version__} ARIMA, exact MLE", "cases": []}
    for name, order, mean, ar, ma in CASES:
        w = simulate(rng, ar, ma, N) + (mean if order[1] == 0 else 0.0)
        y = np.cumsum(w) + 100.0 if order[1] == 1 else w
        trend = "c" if order[1] == 0 else "n"
        res = ARIMA(y, order=order, trend=trend).fit()
        params = dict(zip(res.model.param_names, res.params.tolist()))
        out["cases"].append(
            {
                "name": name,
                "order": list(order),
                "series": [round(v, 10) for v in y.tolist()],
                "mean": params.get("const", 0.0),
                "ar": [params[f"ar.L{i + 1}"] for i in range(order[0])],
                "ma": [params[f"ma.L{j + 1}"] for j in range(order[2])],
                "sigma2": params["sigma2"],
                "forecast": float(res.forecast(1)[0]),
            }
        )
    with open("fixtures.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
