"""``python -m augkit`` (and ``torchrun -m augkit``) run the command line."""

from augkit.cli import main

main()
