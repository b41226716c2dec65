"""The local development stack: the end-to-end demo and the process helpers it shares with bench/ and tests/."""
