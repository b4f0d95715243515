#!/usr/bin/env python
"""kvae's table imputation against scikit-learn's imputers, and its anomaly scores
(issue 24: docs/tables.md has the table this prints).

Tables, fixed before kvae was run on them (kinds set here, not inferred):

* scikit-learn's breast cancer (569 x 30), wine (178 x 13), iris (150 x 4): continuous;
* scikit-learn's diabetes (442 x 10, unscaled): continuous, and sex (categorical, 2 levels);
* statsmodels' ``anes96`` (944 x 10, the 1996 American National Election Study): a real
  mixed table; PID (party identification, 7 levels) and vote (2 levels) categorical, the
  rest continuous (logpopul, TVnews, the three left-right scales, age, educ, income; the
  raw popul is dropped, logpopul is the same column).

For each table and seed: 50% of all cells removed completely at random (MCAR), every
imputer fills them, and the filled cells are compared with the truth: RMSE on the
continuous columns standardised with the complete table's mean and standard deviation,
error rate on the categorical ones. Five seeds; mean and spread (sd over seeds); wall time
of fit and imputation (on whatever else the machine is running: quality is the point).

Peers (scikit-learn, in-process; categorical columns are handed to them as integer codes
and their outputs rounded to the nearest level, the usual practice with these imputers):
``SimpleImputer`` (mean for continuous, most frequent for categorical columns),
``KNNImputer`` (5 neighbours), ``IterativeImputer`` with its default BayesianRidge and with
``ExtraTreesRegressor`` (the missForest-style setting). Their inputs: continuous columns
standardised with the observed cells' mean and sd.

kvae: the table encoder and the mixed likelihood (``kvae.tables.components``, MLP 128-128,
latent_dim 10), trained on the table with its holes by the IWAE bound with K = 20 (MIWAE,
Mattei and Frellsen 2019), then ``kvae.imputation.impute`` with 1,000 importance samples.

Anomaly check (breast cancer): kvae trained on 60% of the rows (complete), scored on the
other 40%; 5% of those rows (at least 20) get one random column shifted by 5 standard
deviations. AUROC of -log p(x) and the share of shifted rows whose top contributor (the
lowest per-column contribution) is the shifted column.

Run: ``python scripts/benchmark_imputation.py`` (statsmodels: ``pip install "kvae[bench]"``).
``--seeds 1 --steps 300`` is a smoke run. The last line printed is one JSON object.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

SEEDS = 5
MISSING = 0.5


# ----- tables ----------------------------------------------------------------------------------
def _sklearn_table(name):
    import pandas as pd
    from sklearn import datasets

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": lambda: datasets.load_diabetes(scaled=False),
        "iris": datasets.load_iris,
    }[name]
    data = loader()
    frame = pd.DataFrame(data.data, columns=[str(c) for c in data.feature_names])
    categorical = ["sex"] if name == "diabetes" else []
    return frame, categorical


def _anes96():
    import statsmodels.api as sm

    frame = sm.datasets.anes96.load_pandas().data.drop(columns=["popul"])
    return frame.astype(float), ["PID", "vote"]


def load_table(name):
    """(complete DataFrame of numbers, names of its categorical columns)."""
    return _anes96() if name == "anes96" else _sklearn_table(name)


TABLES = ["breast_cancer", "wine", "diabetes", "iris", "anes96"]


# ----- metrics ---------------------------------------------------------------------------------
def errors(truth, filled, holes, categorical):
    """(RMSE on the standardised continuous holes, error rate on the categorical holes)."""
    cont = [j for j, c in enumerate(truth.columns) if c not in categorical]
    cat = [j for j, c in enumerate(truth.columns) if c in categorical]
    t = truth.to_numpy(float)
    sd = t.std(0)
    sd[sd == 0] = 1
    rmse = err = float("nan")
    if cont:
        d = ((filled[:, cont] - t[:, cont]) / sd[cont])[holes[:, cont]]
        rmse = float(np.sqrt(np.mean(d**2)))
    if cat:
        err = float(np.mean((np.round(filled[:, cat]) != t[:, cat])[holes[:, cat]]))
    return rmse, err


# ----- peers -----------------------------------------------------------------------------------
def _round_categories(out, observed, cat):
    for j in cat:
        levels = np.unique(observed[~np.isnan(observed[:, j]), j])
        idx = np.abs(out[:, j][:, None] - levels[None, :]).argmin(1)
        out[:, j] = levels[idx]
    return out


def peer(name, x, cat):
    """``x`` (NaN = missing) filled by scikit-learn imputer ``name``, in x's units."""
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    cont = [j for j in range(x.shape[1]) if j not in cat]
    mean, sd = np.nanmean(x, 0), np.nanstd(x, 0)
    sd[sd == 0] = 1
    z = x.copy()
    z[:, cont] = (x[:, cont] - mean[cont]) / sd[cont]
    if name == "mean/most-frequent":
        out = z.copy()
        out[:, cont] = SimpleImputer(strategy="mean").fit_transform(z[:, cont])
        if cat:
            out[:, cat] = SimpleImputer(strategy="most_frequent").fit_transform(z[:, cat])
    else:
        imputer = {
            "KNN": lambda: KNNImputer(n_neighbors=5),
            "iterative": lambda: IterativeImputer(random_state=0, max_iter=10),
            "iterative+extra-trees": lambda: IterativeImputer(
                estimator=ExtraTreesRegressor(n_estimators=100, random_state=0, n_jobs=1),
                random_state=0,
                max_iter=10,
            ),
        }[name]()
        out = imputer.fit_transform(z)
    out[:, cont] = out[:, cont] * sd[cont] + mean[cont]
    return _round_categories(out, x, cat)


PEERS = ["mean/most-frequent", "KNN", "iterative", "iterative+extra-trees"]


# ----- kvae ------------------------------------------------------------------------------------
def _kvae_model(frame, categorical, seed, steps, latent_dim=10):
    """A model of ``frame`` (NaN = missing) trained for about ``steps`` steps, and its
    coded rows and schema."""
    import keras

    import kvae
    from kvae import tables

    keras.utils.set_random_seed(seed)
    kinds = {c: ("categorical" if c in categorical else "continuous") for c in frame.columns}
    x, schema = tables.read_table(frame, kinds=kinds)
    model = kvae.VAE(
        latent_dim=latent_dim,
        data_shape=x.shape[1:],
        objective="iwae",
        num_samples=20,
        seed=seed,
        **tables.components(schema, hidden=(128, 128)),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = min(64, len(x))
    epochs = max(1, math.ceil(steps / math.ceil(len(x) / batch)))
    model.fit(x, epochs=epochs, batch_size=batch, verbose=0)
    return model, x, schema


def _decode(schema, coded):
    """Coded rows -> numbers in the table's units (category codes -> their level's value)."""
    out = np.empty(coded.shape, float)
    for j, col in enumerate(schema.columns):
        if col.kind == "continuous":
            out[:, j] = coded[:, j] * col.std + col.mean
        else:
            levels = np.array([float(v) for v in col.levels])
            out[:, j] = levels[np.round(coded[:, j]).astype(int)]
    return out


def kvae_impute(frame, categorical, seed, steps, num_samples=1000):
    from kvae import imputation

    model, x, schema = _kvae_model(frame, categorical, seed, steps)
    filled = imputation.impute(model, x, num_samples=num_samples, seed=seed)
    return _decode(schema, filled)


# ----- the comparison --------------------------------------------------------------------------
def run_table(name, seeds, steps):
    truth, categorical = load_table(name)
    cat = [j for j, c in enumerate(truth.columns) if c in categorical]
    rows = {m: {"rmse": [], "error_rate": [], "seconds": []} for m in ["kvae", *PEERS]}
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        holes = rng.random(truth.shape) < MISSING
        x = truth.to_numpy(float).copy()
        x[holes] = np.nan
        for method in ["kvae", *PEERS]:
            started = time.perf_counter()
            if method == "kvae":
                frame = truth.where(~holes)
                filled = kvae_impute(frame, categorical, seed, steps)
            else:
                filled = peer(method, x, cat)
            seconds = time.perf_counter() - started
            rmse, err = errors(truth, filled, holes, categorical)
            rows[method]["rmse"].append(rmse)
            rows[method]["error_rate"].append(err)
            rows[method]["seconds"].append(seconds)
            print(
                f"{name} seed {seed} {method}: rmse {rmse:.4f} error {err:.4f} ({seconds:.1f} s)",
                file=sys.stderr,
            )
    summary = {}
    for method, r in rows.items():
        summary[method] = {key: [float(np.mean(v)), float(np.std(v))] for key, v in r.items()}
    return {"shape": list(truth.shape), "categorical": categorical, "methods": summary}


def anomaly_check(seed, steps, shift=5.0):
    """AUROC of -log p(x) for planted outliers and how often the shifted column tops the
    per-column contributions (breast cancer)."""
    from sklearn.metrics import roc_auc_score

    from kvae import imputation

    truth, _ = load_table("breast_cancer")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(truth))
    n_train = int(0.6 * len(truth))
    train, test = truth.iloc[order[:n_train]], truth.iloc[order[n_train:]]
    model, _, schema = _kvae_model(train, [], seed, steps)
    from kvae.tables import read_with_schema

    x, _ = read_with_schema(test, schema)
    n_out = max(20, int(round(0.05 * len(x))))
    rows = rng.choice(len(x), n_out, replace=False)
    cols = rng.integers(0, x.shape[1], n_out)
    sd = truth.to_numpy(float).std(0)
    for r, c in zip(rows, cols, strict=True):  # 5 sd of the column, in its coded units
        x[r, c] += shift * sd[c] / schema.columns[c].std
    scores = imputation.score(model, x, num_samples=1000, seed=seed)
    label = np.zeros(len(x), bool)
    label[rows] = True
    auroc = float(roc_auc_score(label, -scores.log_px))
    top = np.argmin(scores.contributions, axis=1)
    return {
        "held_out_rows": len(x),
        "outliers": int(n_out),
        "auroc": auroc,
        "top_contributor_right": float(np.mean(top[rows] == cols)),
    }


def _cell(mean_sd, digits):
    mean, sd = mean_sd
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _markdown(results):
    lines = [
        "| table | method | RMSE (std. continuous) | error rate (categorical) | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, table in results.items():
        for method, m in table["methods"].items():
            rmse, err, secs = (
                _cell(m[key], d) for key, d in (("rmse", 3), ("error_rate", 3), ("seconds", 1))
            )
            lines.append(f"| {name} | {method} | {rmse} | {err} | {secs} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--steps", type=int, default=3000, help="kvae's training steps per table")
    p.add_argument("--tables", nargs="*", default=TABLES, choices=TABLES)
    p.add_argument("--skip-anomaly", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    results = {name: run_table(name, args.seeds, args.steps) for name in args.tables}
    anomaly = None if args.skip_anomaly else anomaly_check(0, args.steps)
    print(_markdown(results))
    if anomaly:
        print(f"\nanomaly check (breast cancer): {anomaly}")
    print(
        json.dumps(
            {
                "seeds": args.seeds,
                "missing": MISSING,
                "steps": args.steps,
                "tables": results,
                "anomaly": anomaly,
                "seconds": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
