"""Spiking ResNet family (timm-registered), ANN counterparts, teachers, weights I/O."""
from . import registry  # noqa: F401  (registers the models with timm)
from .factory import build_student
from .output import ModelOutput
from .registry import ANNS, STUDENTS, ann_counterpart
from .resnet import ResNet
from .teacher import build_teacher
from .weights import load_weights, save_weights

__all__ = ["ANNS", "STUDENTS", "ModelOutput", "ResNet", "ann_counterpart", "build_student", "build_teacher",
           "load_weights", "save_weights"]
