"""`python -m rasfw`."""

from rasfw.cli import main

if __name__ == "__main__":
    main()
