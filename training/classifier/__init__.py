"""Attribute classifier (face mask, sunglasses, frame glasses): model, scorer and the train-classifier stage."""

from training.classifier.model import ATTRIBUTES, build_classifier
from training.classifier.scorer import AttributeScorer

__all__ = ["ATTRIBUTES", "AttributeScorer", "build_classifier"]
