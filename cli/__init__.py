"""The `regionfarm` command line."""
