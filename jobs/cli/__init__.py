"""The homepage command line: the parser and one module per command area. The top of jobs; only dags sit above it."""
