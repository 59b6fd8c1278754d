"""The run registry: one SQLite file on the login node, written only by login-node processes."""
