from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dtenant_session import stamp

CHECKOUT = Path(__file__).resolve().parents[2]


def test_generation_changes_with_any_config_file(tmp_path: Path) -> None:
    main, dropins = tmp_path / "dtenant.toml", tmp_path / "d"
    empty = stamp.generation(str(main), str(dropins))
    main.write_text("[hook]\n")
    with_main = stamp.generation(str(main), str(dropins))
    dropins.mkdir()
    (dropins / "a.toml").write_text("")
    with_dropin = stamp.generation(str(main), str(dropins))
    (dropins / "ignored.txt").write_text("")
    assert len({empty, with_main, with_dropin}) == 3
    assert stamp.generation(str(main), str(dropins)) == with_dropin
    os.utime(main, ns=(1, 1))
    assert stamp.generation(str(main), str(dropins)) != with_dropin


def test_hook_hot_path_imports_only_the_standard_library() -> None:
    probe = (
        f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); before = set(sys.modules)\n"
        "from dtenant_session import hook, stamp\n"
        "stamp.is_current('alice', stamp.generation())\n"
        "new = sorted(m.split('.')[0] for m in set(sys.modules) - before)\n"
        "print(' '.join(sorted(set(new))))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                            text=True, check=True, cwd=CHECKOUT)  # fmt: skip
    imported = set(result.stdout.split()) - {"dtenant_session"}
    stdlib = set(sys.stdlib_module_names)
    assert imported <= stdlib, imported - stdlib
    assert not imported & {"sqlite3", "tomllib", "asyncio", "json"}


def test_hook_ignores_other_pam_phases_and_root() -> None:
    for env in ({"PAM_TYPE": "close_session", "PAM_USER": "alice"},
                {"PAM_TYPE": "open_session", "PAM_USER": "root"}):  # fmt: skip
        code = (
            f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); "
            "from dtenant_session.hook import main; sys.exit(main())"
        )
        result = subprocess.run([sys.executable, "-I", "-S", "-c", code], env=env,
                                capture_output=True, check=False)  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
