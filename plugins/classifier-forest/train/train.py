#!/usr/bin/env python3
"""Train the routewatch incident cause classifier (a random forest) and export it.

Reads incident CSVs written by `routewatch-quality incident-dataset` (one row per evidence
state of an incident: id, router, opened, label, fault, age, final, then the feature vector),
trains scikit-learn's RandomForestClassifier on them, and writes:

* model/forest.json: the trees as data, read by the component (src/forest.rs);
* model/parity.json: a fixed set of feature vectors with scikit-learn's probabilities, which
  the parity test checks the component against (within 1e-6);
* on stdout: validation figures in Markdown (overall and per-kind top-1 accuracy, the share
  the component would call `unknown`, the confusion matrix), on the evidence when the window
  closed and on the evidence at the opening (the first alert's cause), pasted into the README.

Incidents of no fault (labelled `none`, false incidents, or `planned:<kind>`, during a planned
change) are rows of one more class, NO_FAULT, which the component never names: its
probability is what the causes lack of 1, so an incident that looks like those is `unknown`
instead of a confident cause that a self-healing policy acts on (without it, 0.70 of seed 2's
realistic incidents of no fault were named a cause at 0.5 or more).

Every state of an incident's window is a training row, not only the last: the host names the
cause on the evidence it has whenever the incident changes, first when it opens, and a forest
that saw only complete windows names early evidence wrongly (about a third of first alerts
on seed 42 did).

Usage (see ../README.md for the exact command that made the committed model):

    python3 train.py --train A.csv [B.csv ...] --validate C.csv [D.csv ...] --model-dir ../model \
        [--feedback FEEDBACK.jsonl ...]

`--feedback` reads operators' feedback back: the records of the host's feedback topic
(`router-incident-feedback`, one JSON object per line, as any Kafka consumer prints them, e.g.
`kcat -C -t router-incident-feedback -e`). A confirmed incident with a cause (named by the
operator, or the classifier's own verdict) is one more training row of that cause, with the
feature vector the classifier saw; the newest feedback of an incident wins. False positives
have no cause to learn (the forest names causes of real incidents; whether an incident opens is
the router stage's business), so they are counted and left out.

Operator feedback (`--feedback`) adds a confirmed incident as a row of its cause and a false
positive as a row of NO_FAULT, with the features the classifier saw.

The hyperparameters are scikit-learn's defaults (sqrt(features) per split, bootstrap, Gini)
except two caps that keep the component small: 100 trees and depth 12. Nothing is tuned on
the validation data.
"""

import argparse
import csv
import json
import sys

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier

SEED = 20261201
N_TREES = 100
MAX_DEPTH = 12
FEATURE_LAYOUT = 1
MODEL_FORMAT = 1
# The component's default confidence threshold (src/lib.rs): below it the verdict is unknown.
MIN_CONFIDENCE = 0.5
MAX_MODEL_BYTES = 4 << 20
# Vectors in the parity set.
PARITY_ROWS = 300
# The class of incidents of no fault; the component (src/lib.rs, NO_FAULT) never names it.
NO_FAULT = "none"
# The columns before the features.
KEY_COLUMNS = ["id", "router", "opened", "label", "fault", "age", "final"]


def read(paths):
    """Every row, labelled with its fault kind or NO_FAULT: (keys, X, y, feature names).

    A key is (id, age, final, first): `first` marks an incident's first state, the evidence it
    opened with (age 0, or 1 or 2 when its replay batch reached into later samples)."""
    keys, xs, ys, names = [], [], [], None
    n = len(KEY_COLUMNS)
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            if header[:n] != KEY_COLUMNS:
                sys.exit(f"{path}: the columns should begin {','.join(KEY_COLUMNS)} "
                         "(a data set of an older routewatch-quality? write it again)")
            if names is None:
                names = header[n:]
            elif names != header[n:]:
                sys.exit(f"{path}: another feature layout than the first file")
            seen = set()  # ids are unique within a file, not across files
            for row in reader:
                first = row[0] not in seen
                seen.add(row[0])
                label = row[3]
                if label == "none" or label.startswith("planned:"):
                    label = NO_FAULT
                keys.append((row[0], int(row[5]), row[6] == "1", first))
                xs.append([float(v) for v in row[n:]])
                ys.append(label)
    return keys, np.array(xs, dtype=np.float64), np.array(ys), names


def read_feedback(paths, n_features):
    """Training rows from feedback records: (X, y), and how many false positives were seen."""
    latest = {}
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                    latest[record["incident"]["id"]] = record
                except (ValueError, KeyError) as err:
                    sys.exit(f"{path}:{number}: not a feedback record: {err}")
    xs, ys, false_positives = [], [], 0
    for record in latest.values():
        features = record.get("features") or []
        if record.get("layout") != FEATURE_LAYOUT or len(features) != n_features:
            continue  # features of another layout: nothing to learn
        if record["verdict"] == "false-positive":
            false_positives += 1
            cause = NO_FAULT
        elif record.get("cause"):
            cause = record["cause"]
        else:
            continue  # confirmed, but with no cause
        xs.append([float(v) for v in features])
        ys.append(cause)
    return np.array(xs, dtype=np.float64).reshape(-1, n_features), np.array(ys), false_positives


def export(forest, names):
    trees = []
    for est in forest.estimators_:
        t = est.tree_
        value = []
        for i in range(t.node_count):
            if t.children_left[i] == -1:
                v = t.value[i][0].astype(np.float64)
                value.append((v / v.sum()).tolist())
            else:
                value.append([])
        trees.append(
            {
                "feature": t.feature.tolist(),
                "threshold": t.threshold.tolist(),
                "left": t.children_left.tolist(),
                "right": t.children_right.tolist(),
                "value": value,
            }
        )
    return {
        "format": MODEL_FORMAT,
        "layout": FEATURE_LAYOUT,
        "n_features": len(names),
        "classes": [str(c) for c in forest.classes_],
        "trained": {
            "sklearn": sklearn.__version__,
            "seed": SEED,
            "trees": N_TREES,
            "max_depth": MAX_DEPTH,
        },
        "trees": trees,
    }


def markdown(all_classes, all_y, all_proba):
    # As the component answers: the causes only, NO_FAULT's probability left to none of them.
    causes = all_classes != NO_FAULT
    classes, proba = all_classes[causes], all_proba[:, causes]
    fault = all_y != NO_FAULT
    out = []
    if (~fault).any():
        named = proba[~fault].max(axis=1) >= MIN_CONFIDENCE
        verdicts = classes[np.argmax(proba[~fault][named], axis=1)]
        counts = ", ".join(f"{c} {n}" for c, n in zip(*np.unique(verdicts, return_counts=True)))
        out.append(f"Incidents of no fault: {int((~fault).sum())}; named a cause (at {MIN_CONFIDENCE} or more): "
                   f"{np.mean(named):.3f}{' (' + counts + ')' if counts else ''}\n")
    else:
        out.append("Incidents of no fault: none in this data\n")
    y_true, proba = all_y[fault], proba[fault]
    pred = classes[np.argmax(proba, axis=1)]
    top = proba.max(axis=1)
    acc = float(np.mean(pred == y_true))
    sure = top >= MIN_CONFIDENCE
    out.append(f"Incidents of a fault: {len(y_true)}; top-1 accuracy {acc:.3f}; "
               f"called unknown (top probability < {MIN_CONFIDENCE}): {np.mean(~sure):.3f}; "
               f"accuracy of the rest: {np.mean(pred[sure] == y_true[sure]):.3f}\n")
    out.append("| fault kind | incidents | top-1 accuracy | unknown |")
    out.append("|---|---:|---:|---:|")
    for c in classes:
        m = y_true == c
        if m.sum() == 0:
            continue
        out.append(f"| {c} | {m.sum()} | {np.mean(pred[m] == c):.3f} | {np.mean(~sure[m]):.3f} |")
    out.append("")
    out.append("Confusion matrix (rows: true kind, columns: predicted, top-1 before the unknown threshold):\n")
    short = [c.replace("hardware-", "hw-") for c in classes]
    out.append("| true \\ predicted | " + " | ".join(short) + " |")
    out.append("|---|" + "---:|" * len(classes))
    for c, s in zip(classes, short):
        m = y_true == c
        if m.sum() == 0:
            continue
        counts = [int(np.sum(pred[m] == p)) for p in classes]
        out.append(f"| {s} | " + " | ".join(str(n) for n in counts) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--validate", nargs="+", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--feedback", nargs="*", default=[], help="feedback topic records (JSON lines)")
    args = ap.parse_args()

    _, x, y, names = read(args.train)
    if args.feedback:
        fx, fy, fp = read_feedback(args.feedback, len(names))
        print(f"feedback: {len(fy)} incidents added, {fp} of them false positives (as {NO_FAULT!r})",
              file=sys.stderr)
        x, y = np.vstack([x, fx]), np.concatenate([y, fy])
    vkeys, vx, vy, vnames = read(args.validate)
    if vnames != names:
        sys.exit("training and validation files have different feature layouts")
    if NO_FAULT not in y:
        sys.exit(f"no incident of no fault to train {NO_FAULT!r} on")
    print(f"training on {len(y)} evidence states: " + ", ".join(f"{c} {n}" for c, n in zip(*np.unique(y, return_counts=True))),
          file=sys.stderr)
    forest = RandomForestClassifier(n_estimators=N_TREES, max_depth=MAX_DEPTH, random_state=SEED, n_jobs=1)
    forest.fit(x, y)

    model = export(forest, names)
    text = json.dumps(model, separators=(",", ":"))
    if len(text) > MAX_MODEL_BYTES:
        sys.exit(f"model is {len(text)} bytes, over the component's cap of {MAX_MODEL_BYTES}")
    with open(f"{args.model_dir}/forest.json", "w") as f:
        f.write(text)

    # The parity set: the first validation states by incident id and age, plus the all-zero
    # vector.
    order = sorted(range(len(vkeys)), key=lambda i: vkeys[i][:2])[:PARITY_ROWS]
    px = np.vstack([vx[order], np.zeros((1, len(names)))])
    pproba = forest.predict_proba(px)
    with open(f"{args.model_dir}/parity.json", "w") as f:
        json.dump({"layout": FEATURE_LAYOUT, "classes": model["classes"], "no_fault": NO_FAULT, "features": px.tolist(),
                   "proba": pproba.tolist()}, f, separators=(",", ":"))

    print(f"model: {len(forest.estimators_)} trees, {sum(e.tree_.node_count for e in forest.estimators_)} nodes, "
          f"max depth {max(e.tree_.max_depth for e in forest.estimators_)}, {len(text)} bytes", file=sys.stderr)
    proba = forest.predict_proba(vx)
    final = np.array([k[2] for k in vkeys])
    opening = np.array([k[3] for k in vkeys])
    print("On the evidence when the feature window closed (the cause the incident keeps):\n")
    print(markdown(forest.classes_, vy[final], proba[final]))
    print("\nOn the first evidence, when the incident opened (the cause its first alert names):\n")
    print(markdown(forest.classes_, vy[opening], proba[opening]))


if __name__ == "__main__":
    main()
