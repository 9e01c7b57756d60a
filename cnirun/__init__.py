"""cnirun: run Docker containers whose network is set up by CNI plugins."""

__version__ = "0.1.0"
