"""Speed and memory benchmarks of forgeryloc: `python -m benchmarks [SECTION ...] [--quick]`.

`main(argv)` is the entry point (returns the exit code); see README.md in this folder."""
from .cli import main

__all__ = ["main"]
