"""Real flwr Messages and Contexts as a SuperNode hands them to a ClientApp, for the tests that
call the Mod in-process (import it after ``pytest.importorskip("flwr")``)."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message.message import make_message


def message(kind: str, rnd: int) -> Message:
    """A ``kind`` message ("train", "evaluate") of round ``rnd``, with the SuperLink's metadata."""
    arrays = ArrayRecord([np.zeros((4, 2), np.float32)])
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rnd})})
    meta = Metadata(99, f"m-{kind}-{rnd}", 0, 7, "", str(rnd), time.time(), 600.0, kind)
    return make_message(meta, content)


def context() -> Context:
    """Node 7 of run 99, partition 1 of 3."""
    return Context(
        run_id=99,
        node_id=7,
        node_config={"partition-id": 1, "num-partitions": 3},
        state=RecordDict(),
        run_config={},
    )
