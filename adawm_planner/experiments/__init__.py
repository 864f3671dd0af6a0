"""Runners above core and sim: pretraining, finetuning runs, the strategy grid, the simulator's own checks,
and their command-line glue. Progress bars, CSV logs and plots live here, never in core."""
