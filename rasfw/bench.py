"""`python -m rasfw.bench`: the speed benchmark.

The code lives in `rasfw.app.bench`; this module keeps the command and the old import path working.
"""

from rasfw.app.bench import *  # noqa: F403 - the old import path
from rasfw.app.bench import main

if __name__ == "__main__":
    main()
