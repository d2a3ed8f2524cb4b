"""``python -m courier``: the ``courier`` command, as a pool starts its processes.

The command line is imported only when run: importing this module (as a
walk over the package does) loads nothing of the CLI.
"""

if __name__ == "__main__":
    from courier.cli import main

    main()
