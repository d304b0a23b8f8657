"""Engines: QEMU and Bochs behind one interface (base.Engine)."""
