"""The processes of each run and their descendants, and the run's cgroup.

For every ``(run, pid)`` in the :class:`~edgescope_collector.samplers.ProcessWatch` and every
descendant of that pid, one :class:`ProcessSample` per call, read under ``roots.procfs``:

- ``PID/stat``: CPU % (utime + stime deltas over the interval, 100 % = one core), the start
  time, so that a reused pid is never mixed up with the process that had it before, the
  parent pid and the state (``R``, ``S``, ``D``...);
- ``PID/cmdline``: the command line, read once per process (``[comm]`` where it is empty);
- ``PID/status``: ``VmRSS`` (RSS), ``VmHWM`` (the kernel's RSS high-water mark: the peak that a
  1 Hz sampler would miss), ``Threads``;
- descendants from ``PID/task/*/children`` (``CONFIG_PROC_CHILDREN``), or else from the parent
  pid of every process in procfs; looked up every ``rescan_every`` samples (5), so a new
  child is seen within a few seconds and an exited one is dropped at once.
- ``PID/cgroup`` names the process's cgroup; its figures are read under
  ``roots.sysfs/fs/cgroup`` by :func:`.cgroup.read_cgroup` (the one home of that logic: v2 and
  v1, memory current, peak, ``memory.max``, ``memory.high``, ``memory.events``, swap, and the
  CPU quota with its throttling counters, each from the cgroup whose limit bites). A process in
  the root cgroup has no cgroup figures (the root's are the whole machine's, which the system
  sample already has); in a container with its own cgroup namespace, "/" is the container's
  cgroup and is read.

``cgroup_peak`` is the run's own peak, never the cgroup's lifetime maximum (a cgroup that ran
a 2.78 GB job before a 0.69 GB run would otherwise report 2.78 GB at the run's first sample).
When the sampler first sees a run in a cgroup (v2, on the real ``/sys``), it opens that
cgroup's ``memory.peak`` and writes to it: Linux 6.12+ then resets the peak *for that file
descriptor only* (other readers keep theirs), and every later sample reads it through the same
descriptor. Where that cannot be done (an older kernel, cgroup v1, no permission, a recorded
tree), the peak is the highest ``memory.current`` of the run's samples, which misses spikes
between samples. Which of the two a run got is said once in an ``Event`` (kind ``log``,
``detail["cgroup_peak"]`` ``"memory.peak reset"`` or ``"max of samples"``, with the reason).

A pid that has exited is skipped (a zombie too: it has no memory figures left); its run stays
registered until the collector removes it. When a run ends with its first process gone,
:meth:`ProcessSampler.final_sample` reads the cgroup that process was last seen in once more:
an OOM kill is counted there after the last regular sample, and only then is the read kept.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from edgescope_tracing.records import Event, ProcessSample, Record

from . import ProcessWatch, Roots
from ._files import read_text
from .cgroup import Cgroup, read_cgroup

__all__ = ["ProcessSampler", "read_command", "read_proc_stat"]

try:
    _CLK_TCK = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError):  # pragma: no cover - every Linux has it
    _CLK_TCK = 100


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the sampler needs."""

    ppid: int
    cpu_ticks: int
    threads: int
    start_ticks: int
    state: str = "R"
    """``R``, ``S``, ``D``, ... ``Z`` for a zombie: it has exited, its parent has not reaped it."""
    name: str = ""
    """The kernel's short command name (``comm``, at most 15 characters)."""


def read_proc_stat(path: Path) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; the command name may hold spaces and parentheses."""
    text = read_text(path)
    if not text:
        return None
    head, _, rest = text.rpartition(")")
    name = head.partition("(")[2]
    f = rest.split()
    try:
        # after the name: state(0) ppid(1) ... utime(11) stime(12) ... num_threads(17) start(19)
        return ProcStat(int(f[1]), int(f[11]) + int(f[12]), int(f[17]), int(f[19]), f[0], name)
    except (IndexError, ValueError):
        return None


COMMAND_LIMIT = 256
"""Characters of a command line kept (``docs/trace-format.md``, process ``command``)."""


def read_command(proc_pid: Path, name: str) -> str:
    """The command line of the process at ``proc_pid`` (``/proc/PID``), arguments joined by
    spaces and cut to :data:`COMMAND_LIMIT`; ``[name]`` where it is empty or unreadable."""
    try:
        raw = (proc_pid / "cmdline").read_bytes()[: COMMAND_LIMIT * 4]
    except OSError:
        raw = b""
    args = [a for a in raw.split(b"\0") if a]
    text = " ".join(a.decode("utf-8", "replace") for a in args)
    return text[:COMMAND_LIMIT] if text else f"[{name}]"


def _status(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * (1024 if key != "Threads" else 1)
    return out


PEAK_RESET = "memory.peak reset"
PEAK_SAMPLED = "max of samples"


class RunPeak:
    """One run's own memory peak in one cgroup: from ``memory.peak`` reset for this reader, or
    the highest ``memory.current`` seen."""

    def __init__(self, cg: Cgroup, *, reset: bool) -> None:
        self.fd: int | None = None
        self.seen: int | None = None
        self.why = "cgroup v1 has no per-reader peak: resetting it would reset it for everyone"
        if cg.version == 2 and cg.directory is not None:
            if reset:
                self._open(cg.directory / "memory.peak")
            else:
                self.why = "this is not the kernel's own /sys but a recorded or test tree"

    @property
    def how(self) -> str:
        return PEAK_RESET if self.fd is not None else PEAK_SAMPLED

    def _open(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            self.why = (
                f"memory.peak could not be opened for writing: {e.strerror or e} (a reader "
                "may reset it from Linux 6.12, with write permission on the cgroup)"
            )
            return
        try:
            os.write(fd, b"reset\n")
            value = self._read(fd)
        except OSError as e:
            os.close(fd)
            self.why = f"this kernel cannot reset memory.peak per reader: {e.strerror or e}"
            return
        if value is None:
            os.close(fd)
            self.why = "memory.peak did not read back as a number after the reset"
            return
        self.fd = fd

    @staticmethod
    def _read(fd: int) -> int | None:
        text = os.pread(fd, 64, 0).split()
        return int(text[0]) if text and text[0].isdigit() else None

    def update(self, cg: Cgroup) -> int | None:
        """The run's peak so far, given this sample of its cgroup."""
        if cg.current is not None and (self.seen is None or cg.current > self.seen):
            self.seen = cg.current
        if self.fd is not None:
            try:
                value = self._read(self.fd)
            except OSError:
                value = None
            if value is not None:
                return max(value, self.seen or 0)
        return self.seen

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ProcessSampler:
    """CPU, RSS, peak RSS and threads of every run process and its children, with cgroup memory."""

    name = "process"

    def __init__(
        self,
        roots: Roots,
        watch: ProcessWatch,
        clk_tck: int = _CLK_TCK,
        rescan_every: int = 5,
        reset_peak: bool | None = None,
    ) -> None:
        self.roots = roots
        self.reset_peak = (
            roots.sysfs.resolve() == Path("/sys") if reset_peak is None else reset_peak
        )
        """Whether to reset ``memory.peak`` per run: by default only on the kernel's own /sys,
        never by writing into a recorded tree."""
        self._peaks: dict[tuple[int, str], RunPeak] = {}
        self._last_cgroup: dict[int, tuple[int, str, int | None]] = {}
        """run -> (its first process, the ``/proc/PID/cgroup`` text it was last seen with, and
        the cgroup's OOM-kill counter then)."""
        """(run, cgroup path) -> the run's own peak there."""
        self.watch = watch
        self.clk_tck = clk_tck
        self.rescan_every = rescan_every
        """Look for new children every this many samples: a PyTorch process has dozens of
        threads, each with its own ``children`` file, and reading them all every second
        costs more than the rest of the sample."""
        self._ticks = 0
        self._descendants: dict[int, list[int]] = {}
        self._prev: dict[tuple[int, int], tuple[int, int]] = {}
        """(pid, start ticks) -> (cpu ticks, t_us) of the previous sample."""
        self._commands: dict[tuple[int, int], str] = {}
        """(pid, start ticks) -> its command line, read once (it seldom changes, and reading it
        every second for every process would cost more than the rest of its sample)."""

    def close(self) -> None:
        for peak in self._peaks.values():
            peak.close()
        self._peaks.clear()

    def _run_peak(self, run: int, cg: Cgroup, t_us: int, out: list[Record]) -> int | None:
        key = (run, cg.path)
        peak = self._peaks.get(key)
        if peak is None:
            peak = self._peaks[key] = RunPeak(cg, reset=self.reset_peak)
            if peak.how == PEAK_RESET:
                says = "from memory.peak, reset for this run when it was first seen"
            else:
                says = (
                    f"the highest memory.current of its samples, since {peak.why}; spikes "
                    "between samples are missed"
                )
            out.append(
                Event(
                    "log",
                    f"cgroup peak of run {run} in {cg.path}: {says}",
                    run=run,
                    detail={"cgroup_peak": peak.how, "cgroup": cg.path, "why": peak.why},
                    t_us=t_us,
                )
            )
        return peak.update(cg)

    def descendants(self, pid: int) -> list[int]:
        """The pid's descendants, breadth first (not the pid itself)."""
        proc = self.roots.procfs
        out: list[int] = []
        seen = {pid}
        queue = [pid]
        ppids: dict[int, list[int]] | None = None
        while queue:
            p = queue.pop(0)
            kids: list[int] = []
            tasks = proc / str(p) / "task"
            try:
                tids = [t.name for t in tasks.iterdir()]
            except OSError:
                tids = []
            have_children_file = bool(tids) and (tasks / tids[0] / "children").exists()
            if have_children_file:
                for tid in tids:
                    text = read_text(tasks / tid / "children") or ""
                    kids.extend(int(x) for x in text.split() if x.isdigit())
            elif tids:
                if ppids is None:
                    ppids = self._parent_map()
                kids = ppids.get(p, [])
            for k in kids:
                if k not in seen:
                    seen.add(k)
                    out.append(k)
                    queue.append(k)
        return out

    def _parent_map(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        try:
            entries = [e for e in os.listdir(self.roots.procfs) if e.isdigit()]
        except OSError:
            return out
        for e in entries:
            st = read_proc_stat(self.roots.procfs / e / "stat")
            if st is not None:
                out.setdefault(st.ppid, []).append(int(e))
        return out

    def sample(self, t_us: int) -> list[Record]:
        proc = self.roots.procfs
        records: list[Record] = []
        seen_keys: set[tuple[int, int]] = set()
        cgroups: dict[str, Cgroup | None] = {}
        done: set[int] = set()
        watched = self.watch.items()
        rescan = self._ticks % self.rescan_every == 0
        self._ticks += 1
        if rescan:
            self._descendants = {}
        for run, root_pid in watched:
            kids = self._descendants.get(root_pid)
            if kids is None:
                kids = self._descendants[root_pid] = self.descendants(root_pid)
            for pid in [root_pid, *kids]:
                if pid in done:
                    continue
                done.add(pid)
                st = read_proc_stat(proc / str(pid) / "stat")
                status_text = read_text(proc / str(pid) / "status")
                if st is None or status_text is None or st.state in ("Z", "X"):
                    continue  # gone, or exited and not yet reaped: no memory left to read
                status = _status(status_text)
                if "VmRSS" not in status:
                    continue  # exiting (its memory already let go) or a kernel thread
                key = (pid, st.start_ticks)
                seen_keys.add(key)
                cpu = None
                prev = self._prev.get(key)
                if prev is not None and t_us > prev[1]:
                    seconds = (t_us - prev[1]) / 1e6
                    cpu = round(100.0 * (st.cpu_ticks - prev[0]) / self.clk_tck / seconds, 2)
                    cpu = max(0.0, cpu)
                self._prev[key] = (st.cpu_ticks, t_us)
                command = self._commands.get(key)
                if command is None:
                    command = self._commands[key] = read_command(proc / str(pid), st.name)
                cg_text = read_text(proc / str(pid) / "cgroup") or ""
                if cg_text not in cgroups:
                    cgroups[cg_text] = read_cgroup(self.roots, cg_text)
                cg = cgroups[cg_text]
                if pid == root_pid and cg is not None:
                    self._last_cgroup[run] = (pid, cg_text, cg.oom_kills)
                run_peak = None
                if cg is not None and cg.current is not None:
                    run_peak = self._run_peak(run, cg, t_us, records)
                sample = ProcessSample(
                    run=run,
                    pid=pid,
                    cpu_percent=cpu,
                    rss=status.get("VmRSS"),
                    rss_peak=status.get("VmHWM"),
                    threads=status.get("Threads", st.threads),
                    cgroup_peak=run_peak,
                    ppid=st.ppid,
                    state=st.state,
                    command=command,
                    t_us=t_us,
                )
                records.append(_sample(cg, sample))
        for key in list(self._prev):
            if key not in seen_keys:
                del self._prev[key]
                self._commands.pop(key, None)
        runs = {run for run, _ in watched}
        for pk in [pk for pk in self._peaks if pk[0] not in runs]:
            self._peaks.pop(pk).close()
        for gone in [r for r in self._last_cgroup if r not in runs]:
            del self._last_cgroup[gone]
        return records

    def final_sample(self, run: int, t_us: int) -> ProcessSample | None:
        """The run's cgroup once more, as the run ends, if its first process has gone and the
        cgroup counted an OOM kill since the last sample: a sample with only the cgroup
        figures (the process's are gone with it), or None.

        A process the OOM killer ends is counted in its cgroup's ``oom_kill`` after the last
        regular sample saw it alive; this read is what lets the run's end say so. Called on
        the collector's event loop: a handful of small sysfs reads, once per run.
        """
        last = self._last_cgroup.get(run)
        if last is None:
            return None
        pid, cg_text, kills = last
        st = read_proc_stat(self.roots.procfs / str(pid) / "stat")
        if st is not None and st.state not in ("Z", "X"):
            return None  # still running: the run ended itself, its samples said the rest
        cg = read_cgroup(self.roots, cg_text)
        if cg is None or cg.oom_kills is None or cg.oom_kills == kills:
            return None  # nothing new: the run's samples said all there is
        peak = self._peaks.get((run, cg.path))
        run_peak = peak.update(cg) if peak is not None else None
        return _sample(cg, ProcessSample(run, pid, cgroup_peak=run_peak, t_us=t_us))


def _sample(cg: Cgroup | None, p: ProcessSample) -> ProcessSample:
    """The process sample with the figures of the process's cgroup (None: none)."""
    if cg is None:
        return p
    return dataclasses.replace(
        p,
        cgroup_current=cg.current,
        cgroup_limit=cg.limit,
        oom_kills=cg.oom_kills,
        cgroup=cg.path,
        cgroup_version=cg.version,
        cpu_quota_us=cg.cpu_quota_us,
        cpu_period_us=cg.cpu_period_us,
        cpu_periods=cg.cpu_periods,
        cpu_throttled=cg.cpu_throttled,
        cpu_throttled_us=cg.cpu_throttled_us,
        memory_high=cg.memory_high,
        memory_high_events=cg.high_events,
        memory_max_events=cg.max_events,
        oom_events=cg.oom_events,
        swap_current=cg.swap,
    )
