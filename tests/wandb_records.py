"""Read an offline W&B run (`run-<id>.wandb`) with wandb's own record protobuf.

wandb 0.31 ships no Python reader for its run log (that moved into wandb-core); the log is a LevelDB-style record
log (32 KiB blocks, 7-byte chunk headers) after a 7-byte ":W&B" file header, and each record is a
`wandb.proto.wandb_internal_pb2.Record`.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == FULL:
            yield _parse(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield _parse(pending + chunk)


def _parse(raw: bytes) -> pb.Record:
    r = pb.Record()
    r.ParseFromString(raw)
    return r


def _items(items) -> dict:
    """Items as a dict; nested keys (a logged table is {"trials": {"_type": ...}}) become nested dicts."""
    out: dict = {}
    for i in items:
        keys = [i.key] if i.key else list(i.nested_key)
        d = out
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = json.loads(i.value_json)
    return out


def read_run(path: Path) -> dict:
    """{id, name, group, job_type, config, history: [dict per step], summary, exit_code (None if never closed),
    summaries: {metric: the summaries define_metric asked for, e.g. ["max"]}}."""
    run = {"history": [], "summary": {}, "exit_code": None, "config": {}, "summaries": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(id=r.run.run_id, name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type)
            run["config"].update(
                {k: v.get("value", v) if isinstance(v, dict) else v for k, v in _items(r.run.config.update).items()}
            )
        elif kind == "config":
            run["config"].update(
                {k: v.get("value", v) if isinstance(v, dict) else v for k, v in _items(r.config.update).items()}
            )
        elif kind == "history":
            run["history"].append(_items(r.history.item))
        elif kind == "summary":
            run["summary"].update(_items(r.summary.update))
        elif kind == "metric" and r.metric.name:
            run["summaries"][r.metric.name] = [f.name for f, on in r.metric.summary.ListFields() if on]
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
    return run
