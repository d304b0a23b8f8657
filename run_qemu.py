#!/usr/bin/env python3
"""The main job: build if needed, boot the hypervisor, assert on serial.

    python run_qemu.py                      # boot with the defaults of edk2-config.yaml
    python run_qemu.py --help               # every option
"""
import sys

from pytool.cli import run_qemu_main

if __name__ == "__main__":
    sys.exit(run_qemu_main())
