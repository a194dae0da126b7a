"""The console's settings as a person gives them: safe with none, `manage.py check --deploy`
clean in production mode (HTTPS=true), and a clear message for what is missing or wrong.
Each case runs `manage.py` in a process of its own with the console's real settings, an
environment made here and an empty `.env` (ENV_FILE), so that neither the test run's nor a
developer's own settings leak in."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

import pytest

from tests.support import ROOT

# Everything that changes what `check --deploy` says; removed from the inherited environment.
SECURITY_VARIABLES = {
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "HTTPS",
    "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
}  # fmt: skip
A_KEY = secrets.token_urlsafe(50)


def manage(tmp_path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in SECURITY_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="labconsole.settings", ENV_FILE=str(env_file))
    env.update(variables)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def deploy_check(tmp_path, **variables: str) -> tuple[int, set[str], str]:
    """Exit code, the check ids reported, and the whole output."""
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **variables)
    output = result.stdout + result.stderr
    return result.returncode, set(re.findall(r"\((security\.\w+)\)", output)), output


def test_development_defaults_are_safe_but_not_https(tmp_path):
    """With only a key: DEBUG off and local hosts only (no W018, W020); what is left is
    what only HTTPS can give, which is what makes the check below able to fail."""
    code, ids, output = deploy_check(tmp_path, SECRET_KEY=A_KEY)
    assert code == 1, output
    assert ids == {"security.W004", "security.W008", "security.W012", "security.W016"}, output


def test_production_mode_passes_check_deploy(tmp_path):
    code, ids, output = deploy_check(
        tmp_path, SECRET_KEY=A_KEY, HTTPS="true", ALLOWED_HOSTS="console.example.com"
    )
    assert (code, ids) == (0, set()), output
    assert "System check identified no issues" in output


def test_each_production_setting_can_still_be_turned_off(tmp_path):
    code, ids, output = deploy_check(
        tmp_path,
        SECRET_KEY=A_KEY,
        HTTPS="true",
        ALLOWED_HOSTS="console.example.com",
        SECURE_HSTS_PRELOAD="false",
        CSRF_COOKIE_SECURE="false",
    )
    assert (code, ids) == (1, {"security.W021", "security.W016"}), output


def test_the_proxy_header_setting(tmp_path):
    script = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    shell = ("shell", "--no-imports", "-c", script)
    assert manage(tmp_path, *shell, SECRET_KEY=A_KEY).stdout.strip() == "None"
    https = manage(tmp_path, *shell, SECRET_KEY=A_KEY, HTTPS="true").stdout.strip()
    assert https == "('HTTP_X_FORWARDED_PROTO', 'https')"
    own = manage(tmp_path, *shell, SECRET_KEY=A_KEY, SECURE_PROXY_SSL_HEADER="X-Scheme: https")
    assert own.stdout.strip() == "('HTTP_X_SCHEME', 'https')"

    wrong = manage(tmp_path, *shell, SECRET_KEY=A_KEY, SECURE_PROXY_SSL_HEADER="https")
    assert wrong.returncode == 1
    assert "SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'" in wrong.stderr
    assert "not 'https'" in wrong.stderr


@pytest.mark.parametrize("key", [None, ""])
def test_no_secret_key_says_how_to_get_one(tmp_path, key):
    variables = {} if key is None else {"SECRET_KEY": key}
    result = manage(tmp_path, "check", **variables)
    assert result.returncode == 1
    assert "SECRET_KEY is not set. scripts/ensure-secret-key" in result.stderr


def test_the_secret_key_script_writes_one_key_once(tmp_path):
    """scripts/ensure-secret-key, run in a copy of the checkout's layout: it adds a key to
    `.env`, keeps the rest of the file, replaces an empty `SECRET_KEY=` line, never
    changes a key that is there, and writes nothing when the environment has one."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "ensure-secret-key"
    script.write_bytes((ROOT / "scripts" / "ensure-secret-key").read_bytes())
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    dot_env = tmp_path / ".env"

    def run(**variables: str) -> str:
        done = subprocess.run(
            [script], env={**env, **variables}, capture_output=True, text=True, check=True
        )
        return done.stdout

    assert run(SECRET_KEY="from-the-environment") == ""
    assert not dot_env.exists()

    dot_env.write_text("DEBUG=true\nSECRET_KEY=\nPORT=8001")  # no newline at the end
    assert "wrote a new SECRET_KEY" in run()
    lines = dot_env.read_text().splitlines()
    assert lines[:2] == ["DEBUG=true", "PORT=8001"]
    assert re.fullmatch(r"SECRET_KEY=[A-Za-z0-9]{64}", lines[2]) and len(lines) == 3

    assert run() == ""
    assert dot_env.read_text().splitlines() == lines

    dot_env.unlink()
    run()
    assert oct(dot_env.stat().st_mode & 0o777) == "0o600"
