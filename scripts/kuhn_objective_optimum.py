"""Kept for old command lines: the study lives in :mod:`sepo.objective.kuhn_optimum`
(``python -m sepo.objective.kuhn_optimum``)."""

from sepo.objective.kuhn_optimum import main

if __name__ == "__main__":
    main()
