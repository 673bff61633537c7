"""Where a run is: the cgroup a ``/proc/PID/cgroup`` text names (:func:`cgroup_paths`, the one
parser of that file, for the collector's sampler and the SDK's device facts alike), and the
container a cgroup path names: Docker, containerd, CRI-O, Podman, Kubernetes pods.

A run's process samples carry its cgroup path (process ``cgroup``, format 1.3) as
``/proc/PID/cgroup`` gives it; which container that is, is read from the path here, once, for
every reader (``inspect``, the TUI). The path is all there is to go on: a runtime names its
cgroups after the container's id, and the kubelet after the pod's uid.

Shapes recognised (``<id>``: 64 hex digits; ``<uid>``: a pod uid, with ``_`` for ``-`` under
the systemd driver):

- Docker: ``/docker/<id>`` (cgroupfs driver), ``/system.slice/docker-<id>.scope`` (systemd);
- containerd / CRI-O / Podman: ``cri-containerd-<id>.scope``, ``crio-<id>.scope``,
  ``libpod-<id>.scope``, ``/containerd/<id>``;
- Kubernetes: a ``kubepods`` path with ``pod<uid>`` (``/kubepods/burstable/pod<uid>/<id>``,
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
  cri-containerd-<id>.scope``): the pod's uid and, where the path goes on, its container.

Anything else (a systemd service, a user scope, the root) is no container: :func:`container_of`
gives None, and the cgroup path says where the run is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CgroupPaths", "Container", "cgroup_paths", "container_of"]


@dataclass(frozen=True, slots=True)
class CgroupPaths:
    """What ``/proc/PID/cgroup`` says: the v2 path, and each v1 controller's path."""

    v2: str | None
    v1: dict[str, str]
    """Controller name (``memory``, ``cpu``, ...) -> path."""
    v1_mounts: dict[str, str]
    """Controller name -> the hierarchy's controller list as written (``cpu,cpuacct``): the
    name its mount point conventionally has."""

    @property
    def name(self) -> str | None:
        """The path a run's cgroup is known by: v2's, else v1 memory's, else v1 cpu's."""
        for p in (self.v2, self.v1.get("memory"), self.v1.get("cpu")):
            if p is not None and p != "/":
                return p
        return self.v2 or self.v1.get("memory")


def cgroup_paths(cgroup_file_text: str) -> CgroupPaths:
    """Parse a ``/proc/PID/cgroup`` text (``hierarchy-id:controllers:path`` lines)."""
    v2 = None
    v1: dict[str, str] = {}
    mounts: dict[str, str] = {}
    for line in cgroup_file_text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path:
            continue
        if hid == "0" and controllers == "":
            v2 = path
            continue
        for c in controllers.split(","):
            if c:
                v1[c] = path
                mounts[c] = controllers
    return CgroupPaths(v2, v1, mounts)


_ID = r"[0-9a-f]{64}"
_SCOPE = re.compile(rf"(?:^|/)(docker|cri-containerd|crio|libpod)-({_ID})\.scope(?:/|$)")
_PLAIN = re.compile(rf"(?:^|/)(docker|containerd|crio|libpod)/({_ID})(?:/|$)")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_K8S_CONTAINER = re.compile(rf"/({_ID})(?:/|$)")
_RUNTIME = {
    "docker": "Docker",
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "CRI-O",
    "libpod": "Podman",
}


@dataclass(frozen=True, slots=True)
class Container:
    """A container named by a cgroup path."""

    runtime: str | None
    """``Docker``, ``containerd``, ``CRI-O``, ``Podman``; None where the path names a pod only."""
    id: str | None
    """The container's full id (64 hex digits), where the path shows it."""
    pod: str | None = None
    """The Kubernetes pod's uid (with dashes), where the path is a kubepods one."""

    @property
    def short_id(self) -> str | None:
        """The first 12 digits of the id, as ``docker ps`` shows it."""
        return None if self.id is None else self.id[:12]

    @property
    def text(self) -> str:
        """In words: ``Docker container 4f2a1b3c9d0e``, ``Kubernetes pod 1c2d... (containerd
        container 4f2a1b3c9d0e)``."""
        if self.pod is not None:
            if self.id is None:
                return f"Kubernetes pod {self.pod}"
            who = f"{self.runtime} container" if self.runtime else "container"
            return f"Kubernetes pod {self.pod} ({who} {self.short_id})"
        return f"{self.runtime} container {self.short_id}"

    def to_json(self) -> dict[str, str | None]:
        return {"runtime": self.runtime, "id": self.id, "pod": self.pod}


def container_of(cgroup: str | None) -> Container | None:
    """The container a cgroup path names, or None (no container, or no path).

    >>> container_of("/system.slice/docker-" + "4f2a" * 16 + ".scope").text
    'Docker container 4f2a4f2a4f2a'
    >>> container_of("/user.slice/user-1000.slice/session-3.scope") is None
    True
    """
    if not cgroup:
        return None
    runtime = cid = None
    m = _SCOPE.search(cgroup) or _PLAIN.search(cgroup)
    if m is not None:
        runtime, cid = _RUNTIME[m.group(1)], m.group(2)
    if "kubepods" in cgroup:
        pod = _POD.search(cgroup)
        if pod is not None:
            if cid is None:
                tail = _K8S_CONTAINER.search(cgroup[pod.end() :])
                cid = tail.group(1) if tail is not None else None
            return Container(runtime, cid, pod.group(1).replace("_", "-"))
    if cid is None:
        return None
    return Container(runtime, cid)
