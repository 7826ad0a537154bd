"""`secrets-agent emulator` refuses a port outside 0..65535 as a usage error (exit 2, the flag named, no
traceback) instead of listening elsewhere (gRPC binds the port modulo 65536) or crashing (aiohttp)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("flag", "value", "shown"),
    [
        ("--grpc-port", "99999", "99999"),
        ("--http-port", "70000", "70000"),
        ("--grpc-port", "-1", "-1"),
        ("--http-port", "eighty", "'eighty'"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error(flag: str, value: str, shown: str) -> None:
    other = "--http-port" if flag == "--grpc-port" else "--grpc-port"
    result = subprocess.run(
        [sys.executable, "-m", "agent", "emulator", flag, value, other, "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"argument {flag}: expected a port number from 0 to 65535, got {shown}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stderr
