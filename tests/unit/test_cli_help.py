"""Help text as printed: option help naming a config table is not eaten as markup."""

from __future__ import annotations

from typer.testing import CliRunner

from statestore.cli import app


def test_serve_help_names_the_config_table_of_its_defaults() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "Bind address (default: [api] host)." in result.output
    assert "Port (default: [api] port)." in result.output


def test_log_format_is_a_global_option() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "--log-format" in result.output and "json" in result.output
