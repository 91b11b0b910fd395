"""The jobs: everything that reads or writes a lake. Sub-packages by concern, layered from jobs.cli at
the top to jobs.core at the bottom (pyproject.toml [tool.importlinter])."""
