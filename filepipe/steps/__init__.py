"""Pipeline steps: BatchTransform (tables → tables) and BatchGenerate (a generator → tables)."""

from .base import ComputeStep, PipelineStep
from .generate import BatchGenerate, BatchGenerateStep
from .transform import BatchTransform, BatchTransformStep

__all__ = ["BatchGenerate", "BatchGenerateStep", "BatchTransform", "BatchTransformStep",
           "ComputeStep", "PipelineStep"]
