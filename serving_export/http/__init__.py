"""The lookup server: HTTP handling, routes, the preview page."""
