"""container.* resource attributes of a process that runs in a container (docker, podman).

Kept apart from hooks/docker_.py so that a process in a container (every process, where the host
itself is one) loads only these few lines: process.py imports this module only where /.dockerenv
or /run/.containerenv exists. The name and image come from the host that injected the trace
(hooks/docker_.py); the id is read from the container's own mounts.
"""

# No `from __future__ import annotations`: it imports the `__future__` module (~0.7 M instructions),
# which the start-up bundle spares the modules every process loads (runner.write_bundles).
# The one annotation that would not evaluate on Python 3.8 is a string.
import os

ENV_CONTAINER_IMAGE = "SELFOPT_TRACE_CONTAINER_IMAGE"
ENV_CONTAINER_NAME = "SELFOPT_TRACE_CONTAINER_NAME"

_resource: "dict | None" = None


def resource() -> dict:
    """container.* resource attributes of this process (process.py calls it where /.dockerenv or
    /run/.containerenv exists). Memoized: a forked child reuses it."""
    global _resource
    if _resource is None:
        attributes = {"container.runtime": "podman" if os.path.exists("/run/.containerenv") else "docker"}
        container_id = _container_id()
        if container_id:
            attributes["container.id"] = container_id
        name = os.environ.get(ENV_CONTAINER_NAME)
        if name:
            attributes["container.name"] = name
        image = os.environ.get(ENV_CONTAINER_IMAGE)
        if image:
            attributes["container.image.name"], tag = _split_image(image)
            if tag:
                attributes["container.image.tags"] = [tag]
        _resource = attributes
    return _resource


def _split_image(image: str) -> tuple:
    """("registry/name", "tag") of an image reference; a digest stays in the name."""
    if "@" in image:
        return image, ""
    name, colon, tag = image.rpartition(":")
    if colon and "/" not in tag:
        return name, tag
    return image, ""


def _container_id() -> str:
    """The 64-hex id: docker and podman bind-mount /etc/hostname from a directory named after it;
    under cgroup v1 (or a host cgroup namespace) the cgroup path names it too."""
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
