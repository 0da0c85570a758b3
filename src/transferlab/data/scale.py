"""Feature standardisation, fitted on a task's training rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferlab.errors import DataError


@dataclass(frozen=True)
class Scaler:
    """Feature standardisation as `sklearn.preprocessing.StandardScaler` fits it: the mean
    and population standard deviation of training rows (a constant feature keeps scale 1)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        x = np.asarray(x, np.float64)
        scale = x.std(axis=0)
        scale = np.where(scale < 10 * np.finfo(np.float64).eps, 1.0, scale)
        return cls(x.mean(axis=0), scale)

    @classmethod
    def fit_channels(cls, x: np.ndarray, channels: int) -> Scaler:
        """Per-channel standardisation of images or sequences given as flat rows (channels
        last): each channel's mean and population standard deviation over every row and
        position, repeated for each position so `apply` works on the flat rows."""
        values = np.asarray(x, np.float64).reshape(-1, channels)
        per_channel = cls.fit(values)
        positions = x.shape[1] // channels
        return cls(np.tile(per_channel.mean, positions), np.tile(per_channel.scale, positions))

    def apply(self, x: np.ndarray) -> np.ndarray:
        if np.shape(x)[1] != len(self.mean):
            raise DataError(
                f"the scaler was fitted on {len(self.mean)} features but the data have {np.shape(x)[1]}",
                "standardize",
            )
        return (np.asarray(x, np.float64) - self.mean) / self.scale

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Scaler:
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["scale"], np.float64))
