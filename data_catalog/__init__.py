"""Workspace layout, content-addressed blobs, Parquet tables, manifests and lineage.

Imports nothing else of this project: every other package builds on it.
"""

from data_catalog.blobs import BlobNotFoundError, BlobStore
from data_catalog.config import ConfigError, ConfigModel, StageConfig, load_config
from data_catalog.manifest import FileOutput, InputRef, Manifest, TableOutput, code_version
from data_catalog.runs import StageRun, stage_run
from data_catalog.tables import SchemaError
from data_catalog.workspace import Workspace, WorkspaceError

__all__ = [
    "BlobNotFoundError",
    "BlobStore",
    "ConfigError",
    "ConfigModel",
    "FileOutput",
    "InputRef",
    "Manifest",
    "SchemaError",
    "StageConfig",
    "StageRun",
    "TableOutput",
    "Workspace",
    "WorkspaceError",
    "code_version",
    "load_config",
    "stage_run",
]
