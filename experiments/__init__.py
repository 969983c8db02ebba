"""Sweeps and reports: `experiments/<name>.py` defines runs as config overrides
(`experiments.sweep`), `python -m experiments.run` launches them (skipping finished runs, resuming
interrupted ones) and `python -m experiments.report` tabulates and plots their metrics.jsonl
beside the paper's numbers. See experiments/README.md."""
