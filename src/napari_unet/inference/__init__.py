"""Slice-wise inference over volumes: settings, the engine, uncertainty maps."""

from .predictor import InferenceSettings, Prediction, predict, predict_slices

__all__ = ["InferenceSettings", "Prediction", "predict", "predict_slices"]
