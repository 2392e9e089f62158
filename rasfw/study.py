"""`python -m rasfw.study`: the quality study on the embedded model.

The code lives in `rasfw.app.study`; this module keeps the command and the old import path working.
"""

from rasfw.app.study import *  # noqa: F403 - the old import path
from rasfw.app.study import main

if __name__ == "__main__":
    main()
