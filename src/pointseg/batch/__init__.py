"""Batch prediction, in this process or on a dask.distributed cluster: :func:`predict_many`.

The CLI's ``pointseg predict``, the app's "predict all" and scripts all go through it. See docs/scaling.md.
"""

from pointseg.batch.engine import BatchRun, ImageResult, predict_many, summary_rows, write_summary
from pointseg.batch.inputs import InputItem, expand_inputs
from pointseg.batch.tasks import DEFAULT_TILE_ABOVE_PIXELS, BatchOptions

__all__ = ["predict_many", "BatchRun", "BatchOptions", "ImageResult", "InputItem", "expand_inputs", "summary_rows",
           "write_summary", "DEFAULT_TILE_ABOVE_PIXELS"]
