"""`python -m rasfw`."""

from rasfw.app.cli import main

if __name__ == "__main__":
    main()
