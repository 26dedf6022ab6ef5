"""Read an offline W&B run back from its ``.wandb`` file, as ``wandb sync`` would upload it.

The file is a LevelDB-style log (32 KiB blocks; each chunk a 7-byte header: CRC-32 of the type
byte and data, little-endian length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte ``:W&B`` file
header, holding serialized ``wandb.proto.wandb_internal_pb2.Record`` messages. wandb itself no
longer ships a Python reader (its writer is the Go ``wandb-core``), so the tests read it here.

``wandb.finish()`` can return before ``wandb-core`` has written the file (we saw 1 run in 6 read
back as its bare header); ``finish_offline_run()`` also stops the service, which closes it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline run recorded: its ``log`` rows in order and its final summary."""

    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        """The history rows that hold ``key``."""
        return [row for row in self.history if key in row]


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _records(data: bytes):
    from wandb.proto import wandb_internal_pb2

    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (no :W&B header)")
    pos, pending = CHUNK_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0:  # preallocated space past the last write
            break
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"corrupt chunk at byte {pos}")
        pos += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def finish_offline_run() -> None:
    """Finish the active run and stop wandb's service, so its run file is complete on disk."""
    import wandb

    wandb.finish()
    wandb.teardown()


def read_offline_run(wandb_dir: Path) -> OfflineRun:
    """The one finished offline run under ``wandb_dir`` (the ``WANDB_DIR`` of the test).

    Raises:
        AssertionError: No run, several, or one whose file ends before its exit record.
    """
    files = sorted(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb"))
    if len(files) != 1:
        raise AssertionError(f"expected one offline run under {wandb_dir}, found {files}")
    run = OfflineRun()
    finished = False
    for record in _records(files[0].read_bytes()):
        kind = record.WhichOneof("record_type")
        finished = finished or kind == "exit"
        if kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
            for item in record.summary.remove:
                run.summary.pop(_key(item), None)
    if not finished:
        raise AssertionError(f"{files[0]} has no exit record: the run was not finished")
    return run
