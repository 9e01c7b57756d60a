"""Unit tests: no root, no Docker engine, no real CNI plugins."""
