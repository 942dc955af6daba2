"""Components shared by the iris jobs (the leading underscore keeps kfp-launch from treating this as a job).

KFP ships only each component function's own source to the task, so every component below is
self-contained: imports and helpers live inside the function body. Everything is pure Python
(no numpy, no scikit-learn), so the stock ``python:3.11-slim`` image is enough.
"""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

BASE_IMAGE = "python:3.11-slim"


@dsl.component(base_image=BASE_IMAGE)
def fetch_dataset(source: str, embedded: str, sample_size: int, seed: int, data: Output[Dataset]):
    """Read the iris CSV and keep a seeded sample of SAMPLE_SIZE rows.

    SOURCE empty means EMBEDDED, the copy compiled into the pipeline (runs anywhere); else an http(s) URL, or a
    path resolved against the working directory (the project directory with ``kfp-launch run ... --local``; on
    a cluster a local path does not exist).
    """
    import csv
    import io
    import os
    import random
    import urllib.request

    if not source:
        text, source = embedded, "the iris data compiled into the pipeline"
    elif source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:
            text = response.read().decode("utf-8")
    elif os.path.isfile(source):
        with open(source, encoding="utf-8", newline="") as handle:
            text = handle.read()
    else:
        raise FileNotFoundError(
            f"dataset {source!r} not found (cwd {os.getcwd()}); leave source empty for the compiled-in copy, "
            "pass source=<path> relative to the project directory when running locally, or an http(s):// URL"
        )
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or "species" not in rows[0]:
        raise ValueError(f"{source!r} holds no CSV rows with a 'species' column")
    if sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")

    kept = rows
    if sample_size < len(rows):
        picked = sorted(random.Random(seed).sample(range(len(rows)), sample_size))
        kept = [rows[i] for i in picked]
    with open(data.path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)

    counts: dict = {}
    for row in kept:
        counts[row["species"]] = counts.get(row["species"], 0) + 1
    data.metadata.update({"rows": len(kept), "source_rows": len(rows), "source": source, "seed": seed})
    print(
        f"fetch_dataset: read {len(rows)} rows from {source}; kept {len(kept)} "
        f"(sample_size={sample_size}, seed={seed}); per species: {dict(sorted(counts.items()))}"
    )


@dsl.component(base_image=BASE_IMAGE)
def describe_dataset(data: Input[Dataset], summary: Output[Markdown]) -> int:
    """Write per-feature statistics and per-species means of DATA as Markdown; return the row count."""
    import csv
    import statistics

    with open(data.path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = [name for name in rows[0] if name != "species"]
    species = sorted({row["species"] for row in rows})

    lines = [
        f"# Iris dataset: {len(rows)} rows",
        "",
        f"Source: `{data.metadata.get('source', '?')}`",
        "",
        "| feature | min | mean | max | stdev |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in features:
        values = [float(row[name]) for row in rows]
        stdev = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append(
            f"| {name} | {min(values):.2f} | {statistics.fmean(values):.2f} | {max(values):.2f} | {stdev:.2f} |"
        )
    lines += [
        "",
        "| species | rows | " + " | ".join(f"mean {name}" for name in features) + " |",
        "|---|---:|" + "---:|" * len(features),
    ]
    for label in species:
        group = [row for row in rows if row["species"] == label]
        means = " | ".join(f"{statistics.fmean(float(row[name]) for row in group):.2f}" for name in features)
        lines.append(f"| {label} | {len(group)} | {means} |")

    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"describe_dataset: {len(rows)} rows, {len(features)} features, {len(species)} species")
    print("\n".join(lines))
    return len(rows)


@dsl.component(base_image=BASE_IMAGE)
def build_and_fit(
    data: Input[Dataset],
    steps: int,
    learning_rate: float,
    test_fraction: float,
    seed: int,
    model: Output[Model],
    test_data: Output[Dataset],
):
    """Split DATA per species (seeded), standardize the features and fit a softmax regression.

    Full-batch gradient descent on the mean cross-entropy, STEPS times at LEARNING_RATE. The held-out
    rows go to TEST_DATA; the weights and the standardization go to MODEL as JSON.
    """
    import csv
    import json
    import math
    import random

    if steps < 1 or learning_rate <= 0 or not 0 < test_fraction < 1:
        raise ValueError(
            f"need steps >= 1, learning_rate > 0 and 0 < test_fraction < 1; got "
            f"steps={steps}, learning_rate={learning_rate}, test_fraction={test_fraction}"
        )
    with open(data.path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    features = [name for name in rows[0] if name != "species"]
    classes = sorted({row["species"] for row in rows})

    rng = random.Random(seed)
    train, test = [], []
    for label in classes:  # stratified: each species is split in the same proportion
        group = [row for row in rows if row["species"] == label]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        test += group[:n_test]
        train += group[n_test:]
    if not train or not test:
        raise ValueError(
            f"{len(rows)} rows with test_fraction={test_fraction} leave {len(train)} training "
            f"and {len(test)} test rows; raise sample_size or change test_fraction"
        )

    raw = [[float(row[name]) for name in features] for row in train]
    targets = [classes.index(row["species"]) for row in train]
    mean = [sum(column) / len(column) for column in zip(*raw)]
    std = [math.sqrt(sum((v - m) ** 2 for v in column) / len(column)) or 1.0 for column, m in zip(zip(*raw), mean)]
    xs = [[(v - m) / s for v, m, s in zip(x, mean, std)] for x in raw]
    weights = [[0.0] * len(features) for _ in classes]
    bias = [0.0] * len(classes)

    def loss_and_gradients():
        grad_w = [[0.0] * len(features) for _ in classes]
        grad_b = [0.0] * len(classes)
        total = 0.0
        for x, target in zip(xs, targets):
            scores = [sum(w * v for w, v in zip(ws, x)) + b for ws, b in zip(weights, bias)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]
            norm = sum(exps)
            total -= math.log(max(exps[target] / norm, 1e-12))
            for k, e in enumerate(exps):
                delta = e / norm - (1.0 if k == target else 0.0)
                grad_b[k] += delta
                for j, v in enumerate(x):
                    grad_w[k][j] += delta * v
        return total / len(xs), grad_w, grad_b

    report_every = max(1, steps // 5)
    for step in range(steps):
        loss, grad_w, grad_b = loss_and_gradients()
        if step % report_every == 0:
            print(f"build_and_fit: step {step:>5}/{steps} loss {loss:.4f}")
        for k in range(len(classes)):
            bias[k] -= learning_rate * grad_b[k] / len(xs)
            for j in range(len(features)):
                weights[k][j] -= learning_rate * grad_w[k][j] / len(xs)
    final_loss = loss_and_gradients()[0]

    with open(model.path, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "kind": "softmax-regression",
                "features": features,
                "classes": classes,
                "mean": mean,
                "std": std,
                "weights": weights,
                "bias": bias,
            },
            handle,
            indent=2,
        )
    with open(test_data.path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(test)
    model.metadata.update(
        {
            "framework": "pure Python",
            "steps": steps,
            "learning_rate": learning_rate,
            "final_loss": round(final_loss, 6),
            "train_rows": len(train),
        }
    )
    test_data.metadata.update({"rows": len(test), "test_fraction": test_fraction, "seed": seed})
    print(
        f"build_and_fit: {len(train)} training rows, {len(test)} held out (test_fraction={test_fraction}, "
        f"seed={seed}); {steps} steps at learning_rate={learning_rate}; final loss {final_loss:.4f}"
    )


@dsl.component(base_image=BASE_IMAGE)
def evaluate_model(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> float:
    """Score MODEL on the held-out TEST_DATA; log accuracy and a confusion matrix, and return the accuracy."""
    import csv
    import json

    with open(model.path, encoding="utf-8") as handle:
        params = json.load(handle)
    with open(test_data.path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = params["classes"]

    def predict(row):
        x = [(float(row[name]) - m) / s for name, m, s in zip(params["features"], params["mean"], params["std"])]
        scores = [sum(w * v for w, v in zip(ws, x)) + b for ws, b in zip(params["weights"], params["bias"])]
        return scores.index(max(scores))

    matrix = [[0] * len(classes) for _ in classes]
    for row in rows:
        matrix[classes.index(row["species"])][predict(row)] += 1
    correct = sum(matrix[k][k] for k in range(len(classes)))
    accuracy = correct / len(rows)

    metrics.log_metric("accuracy", accuracy)
    metrics.log_metric("test_rows", len(rows))
    confusion.log_confusion_matrix(classes, matrix)
    print(f"evaluate_model: accuracy {accuracy:.4f} ({correct}/{len(rows)} held-out rows correct)")
    return accuracy


@dsl.component(base_image=BASE_IMAGE)
def report(
    model: Input[Model],
    metrics: Input[Metrics],
    confusion: Input[ClassificationMetrics],
    summary: Output[Markdown],
):
    """Summarize the training run (parameters, loss, accuracy, confusion matrix) as Markdown."""
    fit = model.metadata
    scores = metrics.metadata
    # Metadata travels as a protobuf Struct, so integer counts arrive as floats.
    cm = confusion.metadata["confusionMatrix"]
    labels = [spec["displayName"] for spec in cm["annotationSpecs"]]
    lines = [
        "# Iris classifier",
        "",
        f"**Accuracy {scores['accuracy']:.1%}** on {int(scores['test_rows'])} held-out rows.",
        "",
        (
            f"Softmax regression ({fit.get('framework', '?')}), {int(fit['steps'])} gradient steps at "
            f"learning rate {fit['learning_rate']} on {int(fit['train_rows'])} rows; final training loss "
            f"{fit['final_loss']:.4f}."
        ),
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for label, row in zip(labels, cm["rows"]):
        lines.append(f"| {label} | " + " | ".join(str(int(n)) for n in row["row"]) + " |")
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("report:\n" + "\n".join(lines))
