"""`python -m indexer.cli`, the same as `vistas`."""

from indexer.cli import main

main()
