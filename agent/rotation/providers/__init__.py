"""Rotation providers by secret type: ``symmetric``, ``password``, ``postgres``, ``command``, ``manual``."""
