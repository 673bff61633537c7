"""Format 1.3: the run's cgroup in process records, and why a run ended (issue #14).

Old records still read (the new fields are nil), a record without the new figures is the
older record byte for byte, and the container a cgroup path names is read once, here.
"""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from edgescope_tracing import ProcessSample, RunEnd, StreamDecoder, StreamEncoder
from edgescope_tracing._codec import Decoder, Encoder
from edgescope_tracing.causes import cpu_quota_text, oom_kill_cause
from edgescope_tracing.containers import container_of

ID = "4f2a1b3c9d0e" + "7" * 52
UID = "1c2d3e4f-0000-4abc-8def-0123456789ab"


def test_a_process_record_without_cgroup_figures_is_the_1_0_record() -> None:
    rec = ProcessSample(3, 42, 12.5, 1 << 20, 2 << 20, 4, 5, 6, 7, 0, t_us=1000)
    wire = Encoder().encode(rec)[-1]
    assert len(wire) == 13  # kind, seq, t_us and the ten 1.0 fields: nothing appended
    end = Encoder().encode(RunEnd(3, 0, 0, 1000))[-1]
    assert end == [3, 0, 1000, 3, 0, 0]


def test_a_1_0_process_record_reads_with_no_cgroup_figures() -> None:
    d = Decoder()
    p = d.decode([6, 5, 1000, 3, 42, 12.5, 1, 2, 4, 5, 6, 7, 0])
    assert isinstance(p, ProcessSample)
    assert (p.cgroup, p.cpu_periods, p.memory_high, p.swap_current) == (None, None, None, None)
    e = d.decode([3, 6, 1001, 3, -9, 0])
    assert isinstance(e, RunEnd) and e.cause is None and e.exit_code == -9


def test_cgroup_figures_and_a_cause_round_trip_and_a_newer_minor_s_extra_fields_are_ignored() -> (
    None
):
    rec = ProcessSample(
        1,
        7,
        t_us=5,
        cgroup=f"/system.slice/docker-{ID}.scope",
        cgroup_version=2,
        cpu_quota_us=100_000,
        cpu_period_us=100_000,
        cpu_periods=10,
        cpu_throttled=6,
        cpu_throttled_us=345_000,
        memory_high=512 << 20,
        memory_high_events=3,
        memory_max_events=1,
        oom_events=1,
        swap_current=0,
    )
    end = RunEnd(1, 137, 0, 6, cause=oom_kill_cause(512 << 20, 2))
    enc = StreamEncoder()
    enc.add(rec)
    enc.add(end)
    dec = StreamDecoder()
    got = [r for r in dec.feed(enc.take()) + dec.close() if isinstance(r, ProcessSample | RunEnd)]
    assert got[0] == dataclasses.replace(rec, seq=got[0].seq)
    assert got[1].cause == "killed by the kernel OOM killer: cgroup memory.max 512 MiB reached"
    # A later minor may append more: a reader of 1.3 takes what it knows.
    wire = Encoder().encode(rec)[-1]
    d = Decoder()
    d.strings = {0: rec.cgroup or ""}
    later = d.decode([*wire, 99, "more"])
    assert isinstance(later, ProcessSample) and later.swap_current == 0
    assert msgpack.packb(wire)  # plain msgpack


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (f"/docker/{ID}", "Docker container 4f2a1b3c9d0e"),
        (f"/system.slice/docker-{ID}.scope", "Docker container 4f2a1b3c9d0e"),
        (f"/system.slice/containerd.service/cri-containerd-{ID}.scope", None),
        (
            f"/kubepods/burstable/pod{UID}/{ID}",
            f"Kubernetes pod {UID} (container 4f2a1b3c9d0e)",
        ),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{UID.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            f"Kubernetes pod {UID} (containerd container 4f2a1b3c9d0e)",
        ),
        (f"/kubepods/besteffort/pod{UID}", f"Kubernetes pod {UID}"),
        (f"/machine.slice/libpod-{ID}.scope", "Podman container 4f2a1b3c9d0e"),
        (f"/crio-{ID}.scope", "CRI-O container 4f2a1b3c9d0e"),
        ("/system.slice/train.service", None),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/docker/not-an-id", None),
        ("/", None),
        ("", None),
    ],
)
def test_the_container_a_cgroup_path_names(path: str, text: str | None) -> None:
    c = container_of(path)
    if "containerd.service" in path:
        assert c is not None and c.runtime == "containerd" and c.id == ID
        return
    assert (c.text if c is not None else None) == text


def test_quota_words() -> None:
    assert cpu_quota_text(100_000, 100_000, 2) == "cpu.max 1 CPU"
    assert cpu_quota_text(50_000, 100_000, 1) == "cpu.cfs_quota_us 0.5 CPU"
    assert cpu_quota_text(200_000, 100_000, 2) == "cpu.max 2 CPUs"
    assert oom_kill_cause(None, 1) == "killed by the kernel OOM killer"
    assert oom_kill_cause(64 << 20, 1, likely=True) == (
        "most likely killed by the kernel OOM killer: cgroup memory.limit_in_bytes 64 MiB reached"
    )
