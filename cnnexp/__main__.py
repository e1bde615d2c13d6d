"""`python -m cnnexp`: the `cnnexp` command, where its console script is not on PATH."""

from cnnexp.cli import main

main()
