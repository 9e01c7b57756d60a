"""cnirun test suite: unit tests, end-to-end tests and their shared helpers."""
