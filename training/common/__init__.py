"""What every trainer of the training half shares, so each new trainer writes only its model-specific code.

Modules: `device` (select_device), `distributed` (torchrun context, weight broadcast, gradient averaging),
`run_folder` (RunFolder: checkpoints, grids, events, timestamped stats.jsonl), `resume` (run id / folder /
checkpoint resolution, config checks on resume, MEGN dataset resolution: plan_run), `checkpoint` (weights-only
load, atomic save, strict state loading, a restricted unpickler for foreign pickles), `loop` (TrainingLoop over
the Trainable protocol: logging, progress ticks, grids, hooks, checkpoints) and `images` (PNG grids).
"""
