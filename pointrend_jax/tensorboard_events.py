"""TensorBoard event files written through etils.epath, so that a log directory may be a
local folder or a bucket (`gs://bucket/run/tensorboard`).

Objects in a bucket cannot be appended to, so the writer keeps the current file's records
in memory and each `flush()` rewrites that file whole; once it holds `max_file_bytes`, the
next records go to a new file (TensorBoard reads a directory's event files in name order).
Nothing reaches storage before `flush()` or `close()`.
"""
from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np
from etils import epath
from tensorboardX import summary as tbx_summary
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c


def _record(event: Event) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the serialized event, its masked CRC."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


class EventWriter:
    """Scalars and images for TensorBoard under `logdir`."""

    def __init__(self, logdir, max_file_bytes: int = 8 << 20):
        self.logdir = epath.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.max_file_bytes = max_file_bytes
        self._files = 0
        self._new_file()

    def _new_file(self) -> None:
        # The time first: a later file (or a resumed run's) sorts after the earlier ones.
        self.path = self.logdir / (f"events.out.tfevents.{int(time.time()):010d}."
                                   f"{socket.gethostname()}.{os.getpid()}.{self._files:04d}")
        self._files += 1
        self._contents = bytearray(_record(Event(wall_time=time.time(),
                                                 file_version="brain.Event:2")))
        self._unwritten = False

    def _add(self, summary: Summary, step: int) -> None:
        self._contents += _record(Event(wall_time=time.time(), step=int(step), summary=summary))
        self._unwritten = True

    def add_scalar(self, tag: str, value, step: int) -> None:
        self._add(Summary(value=[Summary.Value(tag=tag, simple_value=float(value))]), step)

    def add_image(self, tag: str, image, step: int) -> None:
        """`image`: height x width x channels (1, 3 or 4), uint8 (floats in [0, 1] are
        scaled by 255); stored as PNG."""
        self._add(tbx_summary.image(tag, np.asarray(image), dataformats="HWC"), step)

    def flush(self) -> None:
        if self._unwritten:
            self.path.write_bytes(bytes(self._contents))
            self._unwritten = False
            if len(self._contents) >= self.max_file_bytes:
                self._new_file()

    def close(self) -> None:
        self.flush()
