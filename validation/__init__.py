"""Great Expectations suites as code, the export checks and the promotion gate. A check that fails
raises. Imports jobs.core only."""
