"""pytool: build, image and boot tooling for the micro-hypervisor.

Kept import-free so that `python3 -m pytool.hostsetup` runs before any
third-party package is installed.
"""
