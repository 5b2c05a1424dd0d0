from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtenant_session import config, trusted

CHECKOUT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, main: str | None, **dropins: str) -> config.Config:
    main_file = tmp_path / "dtenant.toml"
    if main is not None:
        main_file.write_text(main)
    directory = tmp_path / "dtenant.toml.d"
    directory.mkdir(exist_ok=True)
    for name, text in dropins.items():
        (directory / f"{name}.toml").write_text(text)
    return config.load(main_file, directory, _mine(tmp_path))


def _mine(tmp_path: Path) -> trusted.Trust:
    """Files of the test's own user below tmp_path count as root's below /."""
    return trusted.Trust(owner=os.geteuid(), top=str(tmp_path))


def test_no_file_means_all_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, None)
    assert loaded.eligibility == config.Eligibility()
    assert loaded.network.isolation == "strict"
    assert loaded.files == ()


def test_the_shipped_file_is_all_defaults(tmp_path: Path) -> None:
    shipped = (CHECKOUT / "etc" / "dtenant" / "dtenant.toml").read_text()
    loaded = _load(tmp_path, shipped)
    assert loaded == config.Config(files=loaded.files)
    uncommented = "\n".join(line.lstrip("#") for line in shipped.splitlines()
                            if not line.startswith("# ") and line != "#")  # fmt: skip
    assert _load(tmp_path, uncommented) == loaded, "a shown setting is not the default"
    for section, kind in config.SECTIONS.items():
        assert f"\n[{section}]\n" in shipped, f"[{section}] is not shown"
        shown = shipped.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
        for key in config.section_keys(kind):
            assert f"\n#{key} = " in shown, f"{section}.{key} is not shown"


def test_dropins_override_in_name_order(tmp_path: Path) -> None:
    loaded = _load(
        tmp_path,
        '[network]\nisolation = "open"\n[hook]\ntime_limit = 3\n',
        **{
            "10-a": "[hook]\ntime_limit = 4.5\n",
            "20-b": '[eligibility]\ngroups = ["docker-users"]\n',
        },
    )
    assert loaded.network.isolation == "open"
    assert loaded.hook.time_limit == 4.5
    assert loaded.eligibility.groups == ("docker-users",)
    assert len(loaded.files) == 3


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[hook]\ntime_limit = "soon"\n', "hook.time_limit", "must be a number"),
        ("[eligibility]\nmin_uid = 10.5\n", "eligibility.min_uid", "must be an integer"),
        ("[eligibility]\nmin_uid = true\n", "eligibility.min_uid", "must be an integer"),
        ('[eligibility]\ngroups = "staff"\n', "eligibility.groups", "list of strings"),
        ('[network]\nisolaton = "open"\n', "network.isolaton", "unknown key"),
        ("[netwerk]\n", "netwerk", "unknown section"),
        ('[network]\nisolation = "loose"\n', "network.isolation", '"strict" or "open"'),
        ('[network]\nbridge_pool = "10.0.0.300/8"\n', "network.bridge_pool", "not an IPv4"),
        ("[network]\nbridge_prefix = 8\n", "network.bridge_prefix", "/8 must lie between"),
        ('[network]\nnetworks_pool = "10.0.0.0/8"\n', "network.networks_pool", "overlaps"),
        ("[eligibility]\nmin_uid = 0\n", "eligibility.min_uid", "at least 1"),
        ("[hook]\ntime_limit = 0\n", "hook.time_limit", "more than 0"),
        ('[daemon]\nextra = { bridge = "docker0" }\n', "daemon.extra.bridge", "not allowed"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(str(tmp_path))


def test_error_in_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as caught:
        _load(tmp_path, "", **{"50-local": "[hook]\ntime_limit = -1\n"})
    assert caught.value.file.endswith("dtenant.toml.d/50-local.toml")


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"dtenant\.toml: not valid TOML"):
        _load(tmp_path, "[hook\n")


# -- only root's files: whoever can write a drop-in configures every tenant as root ----


def _refused(tmp_path: Path) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as caught:
        config.load(tmp_path / "dtenant.toml", tmp_path / "dtenant.toml.d", _mine(tmp_path))
    message = str(caught.value)
    assert "\n" not in message and "only root may write" in message
    return caught.value


@pytest.mark.parametrize(("mode", "who"), [(0o664, "group"), (0o646, "others")])
def test_a_dropin_writable_by_others_refuses_the_whole_configuration(
    tmp_path: Path, mode: int, who: str
) -> None:
    _load(tmp_path, "[hook]\ntime_limit = 3\n", **{"50-evil": "[hook]\ntime_limit = 4\n"})
    (tmp_path / "dtenant.toml.d" / "50-evil.toml").chmod(mode)
    refused = _refused(tmp_path)
    assert refused.file == str(tmp_path / "dtenant.toml.d" / "50-evil.toml")
    assert f"writable by {who} (mode 0{mode:o})" in refused.problem


def test_a_writable_directory_on_the_way_is_refused(tmp_path: Path) -> None:
    _load(tmp_path, "")
    (tmp_path / "dtenant.toml.d").chmod(0o777)
    refused = _refused(tmp_path)
    assert refused.file == str(tmp_path / "dtenant.toml.d")
    assert "writable by group and others" in refused.problem


def test_the_main_file_group_writable_by_its_own_group_is_refused(tmp_path: Path) -> None:
    _load(tmp_path, "")
    (tmp_path / "dtenant.toml").chmod(0o660)  # g+w is g+w, whichever group it is
    assert _refused(tmp_path).file == str(tmp_path / "dtenant.toml")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_dropin_owned_by_a_user_is_refused(tmp_path: Path) -> None:
    _load(tmp_path, "", **{"50-alice": "[hook]\ntime_limit = 4\n"})
    os.chown(tmp_path / "dtenant.toml.d" / "50-alice.toml", 65534, 65534)
    refused = _refused(tmp_path)
    assert refused.file.endswith("50-alice.toml")
    assert "is owned by nobody (uid 65534), not by root (uid 0)" in refused.problem


def test_a_dropin_of_another_owner_is_refused(tmp_path: Path) -> None:
    """The same rule where chown is not possible: trust another uid than the files'."""
    _load(tmp_path, "")
    trust = trusted.Trust(owner=os.geteuid() + 1, top=str(tmp_path))
    with pytest.raises(config.ConfigError, match=r"is owned by .*, not by"):
        config.load(tmp_path / "dtenant.toml", tmp_path / "dtenant.toml.d", trust)


def test_a_symlinked_dropin_is_refused_even_to_a_good_file(tmp_path: Path) -> None:
    _load(tmp_path, "", **{"10-real": "[hook]\ntime_limit = 4\n"})
    (tmp_path / "dtenant.toml.d" / "50-link.toml").symlink_to(tmp_path / "dtenant.toml")
    refused = _refused(tmp_path)
    assert refused.file.endswith("50-link.toml")
    assert "is a symlink" in refused.problem


def test_a_symlinked_dropin_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dtenant.toml.d").symlink_to(tmp_path / "elsewhere")
    assert "is a symlink" in _refused(tmp_path).problem


def test_a_fifo_dropin_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    _load(tmp_path, "")
    os.mkfifo(tmp_path / "dtenant.toml.d" / "50-fifo.toml", 0o644)
    assert "is a FIFO, not a regular file" in _refused(tmp_path).problem


def test_a_directory_named_like_a_dropin_is_refused(tmp_path: Path) -> None:
    _load(tmp_path, "")
    (tmp_path / "dtenant.toml.d" / "50-dir.toml").mkdir(mode=0o755)
    assert "is a directory, not a regular file" in _refused(tmp_path).problem


def test_a_hard_linked_dropin_is_refused(tmp_path: Path) -> None:
    _load(tmp_path, "", **{"50-a": "[hook]\ntime_limit = 4\n"})
    os.link(tmp_path / "dtenant.toml.d" / "50-a.toml", tmp_path / "other-name")
    assert "has 2 hard links" in _refused(tmp_path).problem


def test_hidden_and_other_files_in_the_dropin_directory_are_ignored(tmp_path: Path) -> None:
    loaded = _load(tmp_path, None, **{".50-a": "[hook]\ntime_limit = 4\n"})
    (tmp_path / "dtenant.toml.d" / "README").write_text("not toml")
    assert loaded.hook.time_limit == config.Hook().time_limit
    assert loaded.files == ()


def test_a_missing_configuration_directory_means_defaults(tmp_path: Path) -> None:
    trust = _mine(tmp_path)
    loaded = config.load(tmp_path / "no" / "dtenant.toml", tmp_path / "no" / "d", trust)
    assert loaded == config.Config()


# -- daemon.extra: an allow-list of settings that cannot weaken the host -----------------


@pytest.mark.parametrize(
    "key",
    ["runtimes", "default-runtime", "hosts", "authorization-plugins", "data-root",
     "exec-root", "userns-remap", "containerd", "cgroup-parent", "exec-opts",
     "seccomp-profile", "iptables", "bridge", "storage-driver", "storage-opts",
     "log-driver", "default-ulimits", "experimental", "no-new-privileges", "init-path",
     "live-restore", "group", "tls"],
)  # fmt: skip
def test_daemon_extra_refuses_what_is_not_allowed(tmp_path: Path, key: str) -> None:
    text = f'[daemon.extra]\n"{key}" = "x"\n'
    with pytest.raises(config.ConfigError) as caught:
        _load(tmp_path, "", **{"50-extra": text})
    assert caught.value.file.endswith("50-extra.toml")
    assert caught.value.key == f"daemon.extra.{key}"
    assert "not allowed: daemon.extra takes only debug, log-level" in caught.value.problem


def test_runtimes_as_the_finding_wrote_them_are_refused(tmp_path: Path) -> None:
    text = ('[daemon]\nextra = { default-runtime = "evil", '
            'runtimes = { evil = { path = "/home/alice/evil" } } }\n')  # fmt: skip
    with pytest.raises(config.ConfigError, match=r"50-x\.toml: daemon\.extra\.default-runtime"):
        _load(tmp_path, "", **{"50-x": text})


def test_daemon_extra_takes_the_allowed_keys(tmp_path: Path) -> None:
    text = (
        "[daemon.extra]\n"
        'debug = true\n"log-level" = "warn"\n'
        '"log-opts" = { max-size = "10m", max-file = "3", compress = "true" }\n'
        '"max-concurrent-downloads" = 6\n"shutdown-timeout" = 30\n'
        '"registry-mirrors" = ["https://mirror.example"]\ndns = ["10.0.0.53"]\n'
        'mtu = 1400\n"default-shm-size" = "128M"\nfeatures = { buildkit = true }\n'
    )
    loaded = _load(tmp_path, text)
    assert loaded.daemon.extra["log-opts"] == {"max-size": "10m", "max-file": "3",
                                               "compress": "true"}  # fmt: skip
    assert loaded.daemon.extra["features"] == {"buildkit": True}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('debug = "yes"', "must be true or false"),
        ('"log-level" = "chatty"', "must be a string like 'info'"),
        ('"log-opts" = { syslog-address = "udp://1.2.3.4:514" }', "'syslog-address' is not "
         "allowed here (allowed: max-size, max-file, compress)"),
        ('"log-opts" = { max-size = 10 }', "max-size must be a string like '10m'"),
        ("features = { buildkit = true, other = true }", "'other' is not allowed here"),
        ("dns = \"10.0.0.53\"", "must be a list of strings"),
        ("mtu = -1", "must be a whole number"),
        ('"default-shm-size" = "1 gig"', "must be a string like '64M'"),
    ],
)  # fmt: skip
def test_daemon_extra_values_are_checked(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        _load(tmp_path, f"[daemon.extra]\n{text}\n")
    assert caught.value.key.startswith("daemon.extra.")
    assert problem in caught.value.problem


def test_a_socket_dropin_is_refused(tmp_path: Path) -> None:
    import socket

    _load(tmp_path, "")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "dtenant.toml.d" / "50-sock.toml"))
        assert "is a socket, not a regular file" in _refused(tmp_path).problem


def test_a_bind_root_must_be_the_users_own_below_root_only_directories(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to own the parents")
    below = trusted.Trust(owner=0, top=str(tmp_path))  # as if tmp_path were /
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    assert trusted.owned_directory(str(home), 1234, below) == str(home)
    assert trusted.owned_directory(str(tmp_path / "missing"), 1234, below) is None
    os.chown(home, 4321, 4321)
    with pytest.raises(trusted.Untrusted, match="the user's own"):
        trusted.owned_directory(str(home), 1234, below)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # noqa: S103 - like /tmp: anyone may swap names in it
    (shared / "alice").mkdir()
    os.chown(shared / "alice", 1234, 1234)
    with pytest.raises(trusted.Untrusted, match="can be swapped"):
        trusted.owned_directory(str(shared / "alice"), 1234, below)
    (tmp_path / "link").symlink_to(home)
    os.chown(tmp_path / "link", 1234, 1234, follow_symlinks=False)
    os.chown(home, 1234, 1234)
    with pytest.raises(trusted.Untrusted, match="symlink owned by"):
        trusted.owned_directory(str(tmp_path / "link"), 1234, below)


def test_daemon_blocked_networks_must_be_networks(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"network\.daemon_blocked.*'metadata'"):
        _load(tmp_path, '[network]\ndaemon_blocked = ["169.254.0.0/16", "metadata"]\n')
    assert _load(tmp_path, "[network]\ndaemon_blocked = []\n").network.daemon_blocked == ()


@pytest.mark.parametrize(
    ("text", "size"), [("", 0), ("1G", 1 << 30), ("1536M", 1536 << 20), ("2T", 2 << 40)]
)
def test_disk_max_is_a_size(text: str, size: int) -> None:
    assert config.disk_bytes(text) == size


@pytest.mark.parametrize("text", ["20", "20GB", "-1G", "10%", "512M"])
def test_disk_max_that_is_no_size_names_the_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dtenant.toml"
    path.write_text(f'[limits]\ndisk_max = "{text}"\n')
    with pytest.raises(config.ConfigError, match=r"limits\.disk_max"):
        config.load(path, tmp_path / "dtenant.toml.d", _mine(tmp_path))
