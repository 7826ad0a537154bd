"""The record of what the app was told (``.notified``): versions only, atomic, and reserved in the config."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.config import NOTIFIED_FILE_NAME, load_config
from agent.errors import ConfigError
from agent.notify.notified import MAX_NOTIFIED_BYTES, read_notified, write_notified


def test_versions_round_trip_in_a_private_file(tmp_path: Path) -> None:
    write_notified(tmp_path, {"db": "7", "api-key": "3"})

    assert read_notified(tmp_path) == {"api-key": "3", "db": "7"}
    assert stat.S_IMODE((tmp_path / NOTIFIED_FILE_NAME).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [NOTIFIED_FILE_NAME]  # no temporary left


@pytest.mark.parametrize("content", [None, "", "not json", "[]", '{"versions": 3}'])
def test_no_record_or_a_broken_one_means_unknown(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / NOTIFIED_FILE_NAME).write_text(content)

    assert read_notified(tmp_path) is None


def test_a_record_that_cannot_be_written_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_notified(tmp_path / "missing-directory", {"db": "1"})

    assert "cannot record the versions told to the app" in caplog.text


def test_no_secret_may_be_written_over_the_record(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("project: p\nsecrets:\n  - {name: x, ref: db, file: .notified}\n")

    with pytest.raises(ConfigError, match="reserved for the record of what the app was told"):
        load_config(config, {}, {})


def test_a_planted_link_fifo_or_huge_file_is_not_read_and_is_replaced(tmp_path: Path) -> None:
    victim = tmp_path / "victim.json"
    victim.write_text('{"versions": {"db": "99"}}')
    output = tmp_path / "out"
    output.mkdir()
    record = output / NOTIFIED_FILE_NAME
    record.symlink_to(victim)
    assert read_notified(output) is None  # not read through the link
    write_notified(output, {"db": "1"})
    assert victim.read_text() == '{"versions": {"db": "99"}}'
    assert not record.is_symlink()
    assert read_notified(output) == {"db": "1"}

    record.unlink()
    os.mkfifo(record)  # no writer: a plain read would wait forever
    assert read_notified(output) is None
    record.unlink()
    with open(record, "wb") as stream:
        stream.truncate(MAX_NOTIFIED_BYTES + 1)
    assert read_notified(output) is None
