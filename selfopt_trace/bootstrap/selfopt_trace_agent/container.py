"""The id of the container a process runs in (docker, podman), read from its own mounts.

Read once per container: `selfopt-trace run` passes it on to CMD (config.ENV_CONTAINER_ID, keyed by
the mount namespace: `passed_on`), as the first traced process of a container started otherwise
passes it on to the others. process.py loads this module only where /.dockerenv or
/run/.containerenv exists and no process of the same mount namespace has read it yet, as the process
starts (or in a fork's child, in an at-fork handler): its `except`s need no tracer.raise_if_programs.
"""

# No `from __future__ import annotations`: it imports the `__future__` module (~0.7 M instructions),
# which the start-up bundle spares the modules every process loads (agent_build.write_bundles).
import os


def container_id() -> str:
    """The 64-hex id: docker and podman bind-mount /etc/hostname from a directory named after it;
    under cgroup v1 (or a host cgroup namespace) the cgroup path names it too. "" when neither does."""
    for path, marker in (("/proc/self/mountinfo", "containers/"), ("/proc/self/cgroup", ":")):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            at = line.find(marker)
            if at < 0:
                continue
            for token in line[at + len(marker):].replace("/", " ").replace("-", " ").replace(".", " ").split():
                if len(token) == 64 and _is_hex(token):
                    return token
    return ""


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def passed_on() -> str:
    """config.ENV_CONTAINER_ID's value for this mount namespace: the namespace, a tab and the id; ""
    outside a container or without /proc (nothing to key the id by). In a container whose id none of
    its files names the value ends in the tab (`mnt:[4026531832]\t`): the id read and found empty,
    which the other processes of the namespace take as it is rather than read /proc again
    (process._container_resource)."""
    if not (os.path.exists("/run/.containerenv") or os.path.exists("/.dockerenv")):
        return ""
    try:
        namespace = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return ""
    return namespace + "\t" + container_id()
