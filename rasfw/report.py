"""`python -m rasfw.report`: rebuild a sweep's results (tables and plots).

The code lives in `rasfw.app.report`; this module keeps the command and the old import path working.
"""

from rasfw.app.report import *  # noqa: F403 - the old import path
from rasfw.app.report import main

if __name__ == "__main__":
    raise SystemExit(main())
