"""The evaluator: does an augmentation help a classifier, and how sure are we?"""

from augkit.evaluate.arms import BASELINE, Arm
from augkit.evaluate.experiment import evaluate
from augkit.evaluate.trainer import TrainConfig

__all__ = ["Arm", "BASELINE", "TrainConfig", "evaluate"]
