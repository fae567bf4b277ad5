"""`make bench`: Vallum's measured costs. Prints Markdown tables."""

from __future__ import annotations

import platform

from tests.bench import micro


def main() -> None:
    print(
        f"# Vallum benchmarks\n\nmachine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}\n"
    )
    print("## Per-request work inside authorize (micro)\n")
    print(micro.report())


if __name__ == "__main__":
    main()
