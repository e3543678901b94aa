"""`python -m graphdsl` runs the command line."""
from graphdsl.cli import main

main(prog_name="graphdsl")
