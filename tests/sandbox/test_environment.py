"""Root never runs with an environment a user controls (issue 11, finding 4).

A user fills the PAM environment from ~/.pam_environment (Debian's sshd reads it with
pam_env user_readenv=1) with everything that makes a program run someone else's code:
LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH, GCONV_PATH, PATH, ENV, BASH_ENV and PYTHON*
variables. Her library and scripts leave a mark in /run, which only root can write, if
they ever run as root. Then she logs in and out over SSH (hot and cold path), root runs
`su`, `su -`, `sudo` and `sudo -i` to her, and a PAM service that reads her file before
dtenant's hook opens and closes sessions for her. The mark must never appear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.lab import host

USER = "mallory"
MARK = "/run/preload-ran-as-root"
HOME = f"/home/{USER}"

# A preload and audit library: its constructor runs in every program that loads it.
EVIL_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
unsigned int la_version(unsigned int version) { return version; } /* LD_AUDIT too */
__attribute__((constructor)) static void mark(void) {
    char exe[256] = "?", line[512];
    if (geteuid() != 0) return;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    int fd = open("/run/preload-ran-as-root", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    int length = snprintf(line, sizeof line, "library in %s (uid %d)\n", exe, getuid());
    if (write(fd, line, length) < 0) {}
    close(fd);
}
"""
MARK_PY = (
    "import os\n"
    "if os.geteuid() == 0:\n"
    f"    open({MARK!r}, 'a').write('python ' + __file__ + '\\n')\n"
)
MARK_SH = f'[ "$(/usr/bin/id -u)" = 0 ] && echo "shell $0" >> {MARK}\n'
WRAPPED = ("sh", "dash", "bash", "touch", "python3", "systemctl", "env", "id", "cat")
PAM_ENVIRONMENT = f"""\
LD_PRELOAD DEFAULT={HOME}/evil.so
LD_AUDIT DEFAULT={HOME}/evil.so
LD_LIBRARY_PATH DEFAULT={HOME}/lib
GCONV_PATH DEFAULT={HOME}/gconv
PATH DEFAULT={HOME}/bin:/usr/local/bin:/usr/bin:/bin
ENV DEFAULT={HOME}/mark.sh
BASH_ENV DEFAULT={HOME}/mark.sh
PYTHONPATH DEFAULT={HOME}/py
PYTHONSTARTUP DEFAULT={HOME}/py/startup.py
PYTHONUSERBASE DEFAULT={HOME}/.local
PAM_USER DEFAULT=bob
PAM_TYPE DEFAULT=open_session
"""
# A PAM service that reads the user's file before dtenant's hook runs, at open too.
EARLY_ENV_SERVICE = """\
auth     sufficient pam_rootok.so
auth     required   pam_deny.so
account  required   pam_permit.so
session  required   pam_env.so readenv=0 user_readenv=1
@include common-session
"""
PAM_SESSION = """\
import pam
session = pam.PamAuthenticator()
assert session.authenticate("mallory", "", service="dtenant-early-env", call_end=False)
assert session.open_session() == 0
session.close_session()
session.end()
"""


def _write(lab: host.Lab, path: str, text: str, mode: str = "644") -> None:
    lab.run(["install", "-D", "-m", mode, "-o", USER, "-g", USER, "/dev/stdin", path], input=text)


@pytest.fixture(scope="module")
def mallory(lab: host.Lab) -> Iterator[str]:
    """A tenant whose ~/.pam_environment tries every way into root's programs."""
    lab.add_account(USER)
    lab.ssh(USER, "true")  # provisioned before the trap is set
    _write(lab, f"{HOME}/evil.c", EVIL_C)
    lab.run(["gcc", "-shared", "-fPIC", "-o", f"{HOME}/evil.so", f"{HOME}/evil.c"])
    lab.run(["chown", f"{USER}:{USER}", f"{HOME}/evil.so"])
    for library in ("libz.so.1", "libexpat.so.1"):  # python3 links both; bash neither
        lab.run(["install", "-D", "-o", USER, f"{HOME}/evil.so", f"{HOME}/lib/{library}"])
    _write(lab, f"{HOME}/gconv/gconv-modules", "module INTERNAL EVIL// evil 1\n")
    _write(lab, f"{HOME}/mark.sh", MARK_SH, "755")
    for program in WRAPPED:
        real = lab.run(["sh", "-c", f"command -v {program}"]).stdout.strip()
        _write(lab, f"{HOME}/bin/{program}", f'#!/bin/sh\n{MARK_SH}exec {real} "$@"\n', "755")
    for module in ("sitecustomize", "usercustomize", "startup", "signal", "select", "dbus_next"):
        _write(lab, f"{HOME}/py/{module}.py", MARK_PY)
    _write(lab, f"{HOME}/.local/lib/python3.11/site-packages/usercustomize.py", MARK_PY)
    _write(lab, f"{HOME}/.pam_environment", PAM_ENVIRONMENT)
    lab.run(["tee", "/etc/pam.d/dtenant-early-env"], input=EARLY_ENV_SERVICE)
    lab.run(["rm", "-f", MARK])
    try:
        yield USER
    finally:
        lab.run(["rm", "-f", f"{HOME}/.pam_environment", "/etc/pam.d/dtenant-early-env"])


SCRIPT = "/usr/lib/dtenant/pam-hook.sh"


def _marks(lab: host.Lab) -> str:
    """What ran as root since the last look."""
    return lab.run(["sh", "-c", f"cat {MARK} 2>/dev/null; rm -f {MARK}"]).stdout


def _logged_out(lab: host.Lab, user: str, timeout: float = 20.0) -> None:
    """Wait until sshd has closed every session of `user` (close_session has run)."""
    deadline = time.monotonic() + timeout
    while lab.run(["pgrep", "-f", f"^sshd: {user}"], check=False).returncode == 0:
        assert time.monotonic() < deadline, f"sshd sessions of {user} still open"
        time.sleep(0.2)


def test_the_trap_works_for_the_user_herself(lab: host.Lab, mallory: str) -> None:
    """Her file does reach her session: the variables are there and her library loads
    (harmlessly: it only marks when it runs as root)."""
    seen = lab.ssh(mallory, "printenv LD_PRELOAD PYTHONPATH;"
                   " grep -q evil.so /proc/self/maps && echo loaded")  # fmt: skip
    assert seen.stdout.split() == [f"{HOME}/evil.so", f"{HOME}/py", "loaded"], seen.stderr


def test_ssh_logins_and_logouts_never_run_her_code_as_root(lab: host.Lab, mallory: str) -> None:
    for _ in range(3):
        lab.ssh(mallory, "true")
        _logged_out(lab, mallory)
    lab.ssh(mallory, "true", tty=True)
    _logged_out(lab, mallory)
    # The cold path too (Python): a missing stamp sends the next login there.
    lab.run(["rm", "-f", f"/run/dtenant/stamps/{mallory}"])
    lab.ssh(mallory, "true")
    _logged_out(lab, mallory)
    assert lab.run(["test", "-e", f"/run/dtenant/stamps/{mallory}"], check=False).returncode == 0
    assert _marks(lab) == ""


def test_variables_sshd_accepts_never_reach_root(lab: host.Lab, mallory: str) -> None:
    """An sshd that accepts her variables (AcceptEnv, set by ssh's SetEnv)."""
    accept = "/etc/ssh/sshd_config.d/dtenant-test-acceptenv.conf"
    lab.configure_sshd(accept, "AcceptEnv LD_* GCONV_PATH PYTHON* ENV BASH_ENV PAM_*\n")
    sent = {"LD_PRELOAD": f"{HOME}/evil.so", "LD_AUDIT": f"{HOME}/evil.so",
            "PYTHONPATH": f"{HOME}/py", "PAM_USER": "bob", "PAM_TYPE": "open_session"}  # fmt: skip
    options = [arg for name, value in sent.items() for arg in ("-o", f"SetEnv={name}={value}")]
    try:
        argv = lab.ssh_argv(mallory, "printenv LD_AUDIT")
        lab.run(["rm", "-f", f"/run/dtenant/stamps/{mallory}"])  # the cold path too
        for _ in range(2):
            seen = lab.run([argv[0], *options, *argv[1:]])
            _logged_out(lab, mallory)
        assert seen.stdout.strip() == f"{HOME}/evil.so"  # sshd did accept them
    finally:
        lab.configure_sshd(accept, None)
    assert _marks(lab) == ""


def test_su_and_sudo_never_run_her_code_as_root(lab: host.Lab, mallory: str) -> None:
    for argv in (
        ["su", "-", mallory, "-c", "true"],
        ["su", mallory, "-c", "true"],
        ["sudo", "-u", mallory, "true"],
        ["sudo", "-i", "-u", mallory, "true"],
    ):
        lab.run(argv)
        lab.run(["script", "-qec", " ".join(argv), "/dev/null"])  # on a terminal
    lab.run(["rm", "-f", f"/run/dtenant/stamps/{mallory}"])
    lab.run(["su", "-", mallory, "-c", "true"])
    assert _marks(lab) == ""


PHRASE = "Su-test-password-1"  # mallory's, for su from another user
SU_ON_A_TERMINAL = """
import os, pty, sys, time
pid, terminal = pty.fork()
if pid == 0:
    os.execv("/bin/su", ["su", sys.argv[1], "-c", "true"])
said, deadline = b"", time.monotonic() + 30
while b"assword" not in said and time.monotonic() < deadline:
    said += os.read(terminal, 1024)
os.write(terminal, sys.argv[2].encode() + b"\\n")
while True:
    try:
        if not os.read(terminal, 1024):
            break
    except OSError:
        break
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_su_from_another_user_runs_the_hook_as_root(lab: host.Lab, mallory: str) -> None:
    """su started by a user runs the hook with her real uid: it must become all root
    (the shell would drop to her uid and provisioning would fail), and run none of
    either user's code."""
    lab.add_account("sufrom")
    lab.run(["chpasswd"], input=f"{mallory}:{PHRASE}\n")
    lab.run(["rm", "-f", f"/run/dtenant/stamps/{mallory}"])
    lab.run(["runuser", "-u", "sufrom", "--", "python3", "-c", SU_ON_A_TERMINAL, mallory,
             PHRASE])  # fmt: skip
    assert lab.run(["test", "-e", f"/run/dtenant/stamps/{mallory}"], check=False).returncode == 0
    assert _marks(lab) == ""


def test_a_stack_that_reads_her_file_before_the_hook(lab: host.Lab, mallory: str) -> None:
    """Her variables reach the hook at open_session as well as at close."""
    lab.run(["python3", "-c", PAM_SESSION])
    lab.run(["rm", "-f", f"/run/dtenant/stamps/{mallory}"])
    lab.run(["python3", "-c", PAM_SESSION])
    assert lab.run(["test", "-e", f"/run/dtenant/stamps/{mallory}"], check=False).returncode == 0
    assert _marks(lab) == ""


def test_the_hook_is_static_and_passes_on_nothing_but_pam_user_and_type(
    lab: host.Lab, mallory: str
) -> None:
    headers = lab.run(["readelf", "--program-headers", "--dynamic", "--wide",
                       "/usr/lib/dtenant/pam-hook"]).stdout  # fmt: skip
    assert "INTERP" not in headers  # no dynamic loader runs, so none reads LD_*
    assert "(NEEDED)" not in headers
    # What the script sees, through the stack that hands it her variables at open.
    lab.run(["cp", "-a", SCRIPT, f"{SCRIPT}.orig"])
    try:
        lab.run(["tee", SCRIPT], input="#!/bin/sh\n/usr/bin/env > /run/hook-env\n")
        lab.run(["python3", "-c", PAM_SESSION])
        seen = lab.run(["cat", "/run/hook-env"]).stdout
    finally:
        lab.run(["mv", f"{SCRIPT}.orig", SCRIPT])
        lab.run(["rm", "-f", "/run/hook-env"])
    assert dict(line.split("=", 1) for line in seen.splitlines()) == {
        "PAM_USER": mallory, "PAM_TYPE": "open_session", "PWD": "/",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    }  # fmt: skip
    assert _marks(lab) == ""
