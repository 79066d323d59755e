"""``python -m sepo``: the same command line as the ``sepo`` script."""

from sepo.cli.main import main

if __name__ == "__main__":
    main()
