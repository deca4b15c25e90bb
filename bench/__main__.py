"""``python -m bench``: the same command line as ``bench``."""

from bench.cli import main

main(prog_name="bench")
