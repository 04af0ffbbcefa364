"""Replay: one row ring and prioritized sampler (`core`), two storages built on it.

Place in the flow: queue -> **replay** -> learner. `ReplayPool` (`rows`) keeps whole observations per
row; `FramePool` (`frames`) keeps each frame of stacked-frame observations once and rebuilds stacks on
sampling. Both take `transitions.Chunk`s and return `transitions.Batch`es, re-exported here.
"""

from asyncdqn.replay.core import RowRing, SumTree, importance_weights, stratified_rows, uniform_rows
from asyncdqn.replay.frames import (FramePool, StorageReport, default_row_capacity, frame_pool_nbytes,
                                    raw_payload_bytes, storage_report)
from asyncdqn.replay.rows import ReplayPool
from asyncdqn.transitions import Batch

__all__ = ["Batch", "FramePool", "ReplayPool", "RowRing", "StorageReport", "SumTree", "default_row_capacity",
           "frame_pool_nbytes", "importance_weights", "raw_payload_bytes", "storage_report", "stratified_rows",
           "uniform_rows"]
