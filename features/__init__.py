"""Pure Spark functions DataFrame -> DataFrame over events and feature tables, and their column
contracts. No session, no I/O. Imports jobs.core (schemas) only."""
