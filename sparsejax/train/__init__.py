"""Training engine: one model protocol, one step update, one epoch driver, one checkpointer.

Entry points::

    cfg = preset("smoke", dataset="dsprites", method="topk", num_seeds=3)
    result = train(cfg, "runs/x", resume=True, metrics_fn=my_hook)   # -> TrainResult
    run = load_run("runs/x")                                         # newest checkpoint

Layout: ``engine`` (the :class:`Model` protocol, :func:`gradient_step`, :func:`run_epochs`,
the resume check), ``mesh``, ``optim``, ``seeds`` (several runs in one program),
``checkpoint``, ``logs`` (metrics log, progress), ``errors``; the hybrid VAE-SAE in
``config``, ``hybrid``, ``state``, ``step``, ``evaluate``, ``loop``; the standalone SAE in
``sae``.
"""

from sparsejax.train.checkpoint import Checkpointer
from sparsejax.train.config import PRESETS, TrainConfig, preset
from sparsejax.train.engine import Model, gradient_step, run_epochs
from sparsejax.train.errors import CheckpointError, ConfigError, RunExistsError, TrainingDiverged
from sparsejax.train.evaluate import EvalResult, RunEval, default_metrics, make_evaluator
from sparsejax.train.hybrid import HybridModel, model_graphdef
from sparsejax.train.loop import TrainResult, load_run, train
from sparsejax.train.mesh import make_mesh
from sparsejax.train.optim import make_optimizer
from sparsejax.train.state import TrainState, init_state
from sparsejax.train.step import make_train_step

__all__ = ["PRESETS", "CheckpointError", "Checkpointer", "ConfigError", "EvalResult",
           "HybridModel", "Model", "RunEval", "RunExistsError", "TrainConfig", "TrainResult",
           "TrainState", "TrainingDiverged", "default_metrics", "gradient_step", "init_state",
           "load_run", "make_evaluator", "make_mesh", "make_optimizer", "make_train_step",
           "model_graphdef", "preset", "run_epochs", "train"]
