"""End-to-end tests: root, the real CNI plugins in /usr/lib/cni and a Docker engine."""
