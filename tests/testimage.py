"""A small container image built locally from Debian's static busybox.

No image registry is reachable from the machines dtenant is tested on, so tests and the
demo import this image into whatever daemon they use (`docker import`).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

IMAGE = "dtenant/busybox:latest"
BUSYBOX = Path("/bin/busybox")  # from busybox-static

APPLETS = (
    "sh", "ash", "cat", "chmod", "chown", "cp", "date", "df", "du", "echo", "env", "false",
    "grep", "head", "hostname", "httpd", "id", "ifconfig", "ip", "kill", "ln", "ls", "mkdir",
    "mkfifo", "mount", "mv", "nc", "nslookup", "ping", "printf", "ps", "pwd", "rm", "sed",
    "seq", "sleep", "sort", "stat", "tail", "tee", "test", "timeout", "top", "touch", "tr",
    "true", "umount", "uname", "wc", "wget", "whoami", "xargs",
)  # fmt: skip

FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "var/www/index.html": "hello from dtenant\n",
}
DIRECTORIES = ("bin", "etc", "root", "tmp", "var/www", "proc", "sys", "dev")

CHANGES = ('CMD ["/bin/sh"]', "ENV PATH=/bin")


def _add_entry(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.uid = info.gid = 0
    info.mtime = 0  # reproducible: the same busybox gives the same tarball
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def rootfs_tar(busybox: bytes) -> bytes:
    """The image's root filesystem as an uncompressed tarball (pure)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in DIRECTORIES:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            _add_entry(tar, info)
        binary = tarfile.TarInfo("bin/busybox")
        binary.size = len(busybox)
        binary.mode = 0o755
        _add_entry(tar, binary, busybox)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            _add_entry(tar, link)
        for path, content in FILES.items():
            data = content.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            _add_entry(tar, info, data)
    return buffer.getvalue()


def build(busybox: Path = BUSYBOX) -> bytes:
    try:
        return rootfs_tar(busybox.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(f"{busybox} is missing: install Debian's busybox-static") from None


def import_argv(docker: str = "/usr/bin/docker", image: str = IMAGE) -> list[str]:
    """`docker import` reading the tarball from stdin; DOCKER_HOST picks the daemon."""
    argv = [docker, "import"]
    for change in CHANGES:
        argv += ["--change", change]
    return [*argv, "-", image]
