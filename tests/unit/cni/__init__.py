"""Unit tests of the CNI core (cnirun/cni/), one file per module."""
