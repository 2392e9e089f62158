"""`python -m rasfw.stats`: compare two evaluation jobs prompt by prompt.

The code lives in `rasfw.app.stats`; this module keeps the command and the old import path working.
"""

from rasfw.app.stats import *  # noqa: F403 - the old import path
from rasfw.app.stats import main

if __name__ == "__main__":
    raise SystemExit(main())
