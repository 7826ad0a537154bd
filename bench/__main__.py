"""`python -m bench`: run every benchmark and print its table."""

from __future__ import annotations

from bench import emulator_access


def main() -> None:
    emulator_access.main()


if __name__ == "__main__":
    main()
