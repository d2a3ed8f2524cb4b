"""``python -m courier``: the ``courier`` command, as a pool starts its children."""

from courier.cli import main

main()
