"""Kept for old command lines: the study lives in :mod:`sepo.exact.kuhn_objective`
(``python -m sepo.exact.kuhn_objective``)."""

from sepo.exact.kuhn_objective import main

if __name__ == "__main__":
    main()
