"""The command-line entry points of the trainer."""
