"""kfp-launch: launch Kubeflow Pipelines runs from GitLab CI and wait for their outcome."""

__version__ = "0.1.0"
