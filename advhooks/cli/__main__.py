"""``python -m advhooks.cli``: the command line."""

from . import main

main()
