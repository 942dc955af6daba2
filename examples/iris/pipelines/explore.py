"""Job `explore`: fetch the iris data (optionally a seeded sample) and describe it as Markdown.

kfp-launch run explore --local
"""

from kfp import dsl

from ._components import describe_dataset, fetch_dataset
from ._iris_data import IRIS_CSV

# `kfp-launch run --all --profile toy` runs every job's toy variant on default-branch commits.
PROFILES: dict[str, dict[str, object]] = {"toy": {"sample_size": 30}}


@dsl.pipeline(name="iris-explore", description="Summary statistics of Fisher's iris data.")
def pipeline(source: str = "", sample_size: int = 150, seed: int = 42) -> int:
    """Returns the number of rows described. SOURCE: a path relative to the project dir, or an http(s) URL."""
    data = fetch_dataset(source=source, embedded=IRIS_CSV, sample_size=sample_size, seed=seed).outputs["data"]
    return describe_dataset(data=data).outputs["Output"]
