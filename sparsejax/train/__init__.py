"""Training engine: typed configs and presets, the jitted data-parallel step, the loop.

Entry points::

    cfg = preset("smoke", dataset="dsprites", method="topk", num_seeds=3)
    result = train(cfg, "runs/x", resume=True, metrics_fn=my_hook)   # -> TrainResult
    run = load_run("runs/x")                                         # newest checkpoint
"""

from sparsejax.train.checkpoint import CheckpointError, Checkpointer
from sparsejax.train.config import PRESETS, ConfigError, TrainConfig, preset
from sparsejax.train.evaluate import EvalResult, RunEval, default_metrics, make_evaluator
from sparsejax.train.loop import (RunExistsError, TrainingDiverged, TrainResult, load_run,
                                  train)
from sparsejax.train.state import TrainState, init_state, model_graphdef
from sparsejax.train.step import make_mesh, make_train_step

__all__ = ["PRESETS", "CheckpointError", "Checkpointer", "ConfigError", "EvalResult",
           "RunEval", "RunExistsError", "TrainConfig", "TrainResult", "TrainState",
           "TrainingDiverged", "default_metrics", "init_state", "load_run", "make_evaluator",
           "make_mesh", "make_train_step", "model_graphdef", "preset", "train"]
