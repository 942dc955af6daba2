"""Jobs of the iris example: one module per job (`train`, `explore`); `_components` is shared, not a job."""
