"""Import rules: the core never loads tokenflow.oidc, and tokenflow.oidc loads no test
support and no web framework."""

from __future__ import annotations

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(  # noqa: S603 - our own interpreter and fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(done.stdout.split())


def test_the_core_does_not_import_the_oidc_extra() -> None:
    modules = loaded_after("import tokenflow, tokenflow.stores")
    assert not {"tokenflow.oidc", "joserfc", "httpx"} & modules


def test_oidc_imports_no_test_support_and_no_framework() -> None:
    modules = loaded_after("import tokenflow.oidc")
    assert "tokenflow.oidc" in modules
    assert not any(name.startswith("tokenflow.testing") for name in modules)
    frameworks = {"django", "flask", "starlette", "fastapi", "aiohttp", "tornado", "werkzeug"}
    assert not frameworks & {name.partition(".")[0] for name in modules}
