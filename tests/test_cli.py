"""The `threadline` command, run as a user would: a real process on a real data dir."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import threadline

CONFIG = """
default_model = "echo"

[models.echo]
provider = "fake"
replies = ["echo"]

[models."priced"]
provider = "fake"
replies = ["a fixed answer"]
credits = { input_per_1k = 1000, output_per_1k = 1000 }
"""


def test_keys_models_and_chat(tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"

    made = threadline(
        "keys",
        "create",
        "--org",
        "acme",
        "--create-org",
        "--role",
        "ADMIN",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("tl_") and "\n" not in key

    listed = threadline("models", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "echo" in listed.stdout and "priced" in listed.stdout and "fake" in listed.stdout

    chat = threadline(
        "chat",
        "hello from the terminal",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == "hello from the terminal"

    priced = threadline(
        "chat",
        "x",
        "--model",
        "priced",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert priced.stdout.strip() == "a fixed answer"

    unknown = threadline(
        "chat",
        "x",
        "--model",
        "nope",
        "--data-dir",
        str(data),
        "--config",
        str(config),
        cwd=tmp_path,
    )
    assert unknown.returncode == 1
    assert "nope" in unknown.stderr and "echo" in unknown.stderr


def test_bad_role_and_missing_config_are_clear(tmp_path: Path) -> None:
    bad = threadline("keys", "create", "--role", "OWNER", "--data-dir", str(tmp_path), cwd=tmp_path)
    assert bad.returncode != 0 and "ADMIN or MEMBER" in bad.stderr
    missing = threadline("models", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_an_unknown_provider_is_a_config_error_naming_the_known_ones(tmp_path: Path) -> None:
    config = tmp_path / "threadline.toml"
    config.write_text('default_model = "gpt"\n\n[models.gpt]\nprovider = "openai"\n')
    for command in (["models"], ["chat", "hi", "--data-dir", str(tmp_path / "data")]):
        run = threadline(*command, "--config", str(config), cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip() == (
            f"threadline: config error in {config} (or THREADLINE_* variables): "
            "models.gpt.provider: unknown provider 'openai'; "
            "known providers: local, openai-compatible, fake"
        )
        assert not (tmp_path / "data").exists()  # nothing was started
