"""`make bench`: Vallum's measured costs. Prints Markdown tables."""

from __future__ import annotations

import platform

from tests.bench import load, micro


def main() -> None:
    print(
        f"# Vallum benchmarks\n\nmachine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}\n"
    )
    print("## Per-request work inside authorize (micro)\n")
    print(micro.report())
    print(
        "\n## Through Vallum vs direct (wrk, 32 connections, 1 thread, 5 s x 3 rounds, medians)\n"
    )
    print(load.report())


if __name__ == "__main__":
    main()
