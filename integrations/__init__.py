"""Thin adapters for training frameworks, installed as ``advhooks.integrations``.

They import advhooks, never the reverse, and only translate framework hooks into core calls.
"""

__all__: list[str] = []
