"""Job `train`: fetch the iris data, fit a softmax classifier, evaluate it on held-out rows, report.

kfp-launch run train --local                  # defaults: all 150 rows, 300 steps
kfp-launch run train --local --profile toy    # a few seconds, on 60 rows and 20 steps
"""

from kfp import dsl

from ._components import build_and_fit, evaluate_model, fetch_dataset, report
from ._iris_data import IRIS_CSV

# Named parameter sets, selected with `--profile NAME`; values override the pipeline defaults below.
PROFILES: dict[str, dict[str, object]] = {
    "toy": {"steps": 20, "sample_size": 60},  # a smoke test: quick, not meant to be accurate
    "full": {"steps": 1000, "sample_size": 150},
}


@dsl.pipeline(name="iris-train", description="Train and evaluate a softmax classifier on Fisher's iris data.")
def pipeline(
    source: str = "",
    sample_size: int = 150,
    steps: int = 300,
    learning_rate: float = 0.5,
    test_fraction: float = 0.3,
    seed: int = 42,
) -> float:
    """SOURCE empty: the iris data compiled into the pipeline (runs anywhere); else an http(s) URL, or a path
    relative to the project directory (local runs)."""
    data = fetch_dataset(source=source, embedded=IRIS_CSV, sample_size=sample_size, seed=seed).outputs["data"]
    fit = build_and_fit(data=data, steps=steps, learning_rate=learning_rate, test_fraction=test_fraction, seed=seed)
    scored = evaluate_model(model=fit.outputs["model"], test_data=fit.outputs["test_data"])
    report(model=fit.outputs["model"], metrics=scored.outputs["metrics"], confusion=scored.outputs["confusion"])
    return scored.outputs["Output"]
