"""The lookup server: server (sockets, workers, reload loop), protocol (HTTP parsing, responses,
limits), app (routes), store (the opened export + delta and its hot swap), metrics, preview."""
