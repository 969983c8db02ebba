"""Launchers: the same training command on one machine (`local`), on every worker of a TPU pod
(`tpu`) or under SLURM on a GPU cluster (`slurm`). Used by `python -m experiments.run` for sweeps;
`python -m launch.<name> [options] -- --config=... --workdir=...` launches one command. Every
launcher's --dry_run prints the exact commands and runs nothing."""
