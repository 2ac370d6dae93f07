"""Training loops for stochastic graphs with any estimator."""

from estimator_lab.train.loop import SGDConfig, TrainStep, train_steps

__all__ = ["SGDConfig", "TrainStep", "train_steps"]
