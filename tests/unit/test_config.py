from __future__ import annotations

from pathlib import Path

import pytest

from dtenant_session import config

CHECKOUT = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, main: str | None, **dropins: str) -> config.Config:
    main_file = tmp_path / "dtenant.toml"
    if main is not None:
        main_file.write_text(main)
    directory = tmp_path / "dtenant.toml.d"
    directory.mkdir(exist_ok=True)
    for name, text in dropins.items():
        (directory / f"{name}.toml").write_text(text)
    return config.load(main_file, directory)


def test_no_file_means_all_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, None)
    assert loaded.eligibility == config.Eligibility()
    assert loaded.network.isolation == "strict"
    assert loaded.files == ()


def test_the_shipped_file_is_all_defaults(tmp_path: Path) -> None:
    shipped = (CHECKOUT / "etc" / "dtenant" / "dtenant.toml").read_text()
    loaded = _load(tmp_path, shipped)
    assert (loaded.eligibility, loaded.network, loaded.hook, loaded.daemon) == (
        config.Eligibility(), config.Network(), config.Hook(), config.Daemon())  # fmt: skip


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
        ('[daemon]\nextra = { bridge = "docker0" }\n', "daemon.extra", "owns: bridge"),
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
