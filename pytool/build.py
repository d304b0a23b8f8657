"""Build the EFI images with clang + lld-link.

build_images() compiles every .c/.S in an image's directories into
build/<TARGET>/obj/<image>/, links build/<TARGET>/<image>.efi and validates
it.  Incremental: an object is rebuilt when its source, any header it
included (clang -MMD dep files) or the compile flags (stamp file) changed;
an image is relinked when an object, the object list or the link flags
changed.  All tool output also goes to build/<TARGET>/build.log.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from pytool.validate import validate_image

# Flags every EFI object needs, whatever edk2-config.yaml says: the UEFI ABI
# (Microsoft x64, PE/COFF, 16-bit wchar_t), no red zone (firmware interrupts
# run on our stack), no SSE (the core runs in VMX root with guest FPU state
# loaded), and no hosted runtime (stack probes, stack protector).
TARGET_FLAGS = [
    "-target", "x86_64-unknown-windows",
    "-ffreestanding", "-fshort-wchar", "-mno-red-zone", "-mno-stack-arg-probe",
    "-mgeneral-regs-only", "-fno-stack-protector",
]
SYSTEM_INCLUDES = ["/usr/include/efi", "/usr/include/efi/x86_64"]
LINK_FLAGS = [
    "-subsystem:efi_application", "-entry:efi_main", "-nodefaultlib",
    "-machine:x64", "-dynamicbase", "-nxcompat",
]
SOURCE_SUFFIXES = (".c", ".S")
HOSTSETUP_HINT = "run python3 -m pytool.hostsetup"


class BuildError(Exception):
    """A build step failed; .cmd and .output hold the command and its output."""

    def __init__(self, message: str, cmd: list[str] | None = None, output: str = ""):
        self.cmd = cmd
        self.output = output
        text = message
        if cmd:
            text += "\ncommand: " + shlex.join(cmd)
        if output:
            tail = "\n".join(output.rstrip().splitlines()[-40:])
            text += "\n" + tail
        super().__init__(text)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BuildError(f"{name} not found: {HOSTSETUP_HINT}")
    return path


def _parse_depfile(text: str) -> list[str]:
    """Prerequisites from a Makefile-style dep file (clang -MMD)."""
    text = text.replace("\\\r\n", " ").replace("\\\n", " ")
    _, _, deps = text.partition(": ")
    out, cur, i = [], "", 0
    while i < len(deps):
        ch = deps[i]
        if ch == "\\" and i + 1 < len(deps) and deps[i + 1] in " #":
            cur += deps[i + 1]
            i += 2
            continue
        if ch.isspace():
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    if cur:
        out.append(cur)
    return out


def _mtime(p: Path) -> float | None:
    try:
        return p.stat().st_mtime_ns / 1e9
    except OSError:
        return None


def _needs_compile(root: Path, src: Path, obj: Path, dep: Path) -> bool:
    obj_t = _mtime(obj)
    if obj_t is None or not dep.exists():
        return True
    for d in [str(src)] + _parse_depfile(dep.read_text(errors="replace")):
        t = _mtime(root / d)           # clang ran in root: relative paths
        if t is None or t > obj_t:     # a vanished header also rebuilds
            return True
    return False


def _read_json(p: Path):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


class _Log:
    """Appends to build.log and echoes tool output through `log`."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("a", encoding="utf-8")
        self.echo = echo

    def line(self, text: str, echo: bool = True) -> None:
        self.f.write(text.rstrip("\n") + "\n")
        self.f.flush()
        if echo:
            self.echo(text.rstrip("\n"))

    def close(self) -> None:
        self.f.close()


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    return p.returncode, p.stdout


def _sources(root: Path, dirs: list[str]) -> list[Path]:
    srcs: list[Path] = []
    for d in dirs:
        base = root / d
        if not base.is_dir():
            continue                   # a backend not written yet
        srcs += sorted(p for p in base.rglob("*")
                       if p.is_file() and p.suffix in SOURCE_SUFFIXES)
    return srcs


def _build_one(root: Path, out_dir: Path, image: str, dirs: list[str],
               cflags: list[str], clang: str, lld: str, blog: _Log) -> Path:
    obj_root = out_dir / "obj" / image
    obj_root.mkdir(parents=True, exist_ok=True)
    srcs = _sources(root, dirs)
    if not srcs:
        raise BuildError(f"image {image}: no .c or .S files in {dirs}")

    inc = ["-I", str(root / "efi" / "include")]
    for d in SYSTEM_INCLUDES:
        inc += ["-isystem", d]
    c_flags = TARGET_FLAGS + cflags + inc
    # -std= is meaningless for assembler sources and clang warns (-Werror).
    s_flags = TARGET_FLAGS + [f for f in cflags if not f.startswith("-std=")] \
        + inc + ["-D__ASSEMBLY__"]

    stamp = obj_root / "flags.json"
    want_stamp = {"clang": clang, "c": c_flags, "S": s_flags}
    flags_changed = _read_json(stamp) != want_stamp

    jobs = []
    objs = []
    for src in srcs:
        rel = src.relative_to(root)
        obj = obj_root / (str(rel) + ".obj")
        dep = obj_root / (str(rel) + ".d")
        objs.append(obj)
        if flags_changed or _needs_compile(root, src, obj, dep):
            flags = s_flags if src.suffix == ".S" else c_flags
            cmd = [clang] + flags + ["-MMD", "-MF", str(dep), "-c", str(rel),
                                     "-o", str(obj)]
            jobs.append((rel, obj, cmd))

    def compile_one(job):
        rel, obj, cmd = job
        obj.parent.mkdir(parents=True, exist_ok=True)
        rc, out = _run(cmd, root)
        return rel, obj, cmd, rc, out

    failure = None
    if jobs:
        if flags_changed:
            stamp.unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for rel, obj, cmd, rc, out in pool.map(compile_one, jobs):
                blog.line(f"[{image}] cc {rel}")
                blog.line(shlex.join(cmd), echo=False)
                if out.strip():
                    blog.line(out)
                if rc != 0:
                    obj.unlink(missing_ok=True)
                    if failure is None:
                        failure = (rel, cmd, out)
        if failure:
            rel, cmd, out = failure
            blog.line(f"[{image}] FAILED compiling {rel}")
            raise BuildError(f"compile failed: {rel}", cmd, out)
    stamp.write_text(json.dumps(want_stamp))

    efi = out_dir / f"{image}.efi"
    link_cmd = [lld] + LINK_FLAGS + [f"-out:{efi}"] + [str(o) for o in objs]
    link_stamp = obj_root / "link.json"
    efi_t = _mtime(efi)
    relink = (efi_t is None or _read_json(link_stamp) != link_cmd
              or any((_mtime(o) or 0) > efi_t for o in objs))
    if relink:
        link_stamp.unlink(missing_ok=True)
        blog.line(f"[{image}] link {efi}")
        blog.line(shlex.join(link_cmd), echo=False)
        rc, out = _run(link_cmd, root)
        if out.strip():
            blog.line(out)
        if rc != 0:
            efi.unlink(missing_ok=True)
            raise BuildError(f"link failed: {image}", link_cmd, out)
        validate_image(efi)
        link_stamp.write_text(json.dumps(link_cmd))
    else:
        blog.line(f"[{image}] up to date", echo=False)
    return efi


def build_images(root: Path, build_cfg: dict, target: str,
                 images: list[str] | None = None,
                 log: Callable[[str], None] = print,
                 build_dir: Path | None = None) -> dict[str, Path]:
    """Builds images (default: all in build_cfg['images']) for target.

    Returns {image name: path of the .efi}.  build_dir defaults to
    root/build; the outputs go to build_dir/<target>/.
    """
    root = Path(root).resolve()
    all_images: dict = build_cfg.get("images") or {}
    targets: dict = build_cfg.get("targets") or {}
    if target not in targets:
        raise BuildError(f"unknown build target {target!r} (have {sorted(targets)})")
    names = list(all_images) if images is None else list(images)
    unknown = [n for n in names if n not in all_images]
    if unknown:
        raise BuildError(f"unknown image(s) {unknown} (have {sorted(all_images)})")

    clang = _tool("clang")
    lld = _tool("lld-link")
    cflags = list(build_cfg.get("common_cflags") or []) + \
        list(targets[target].get("cflags") or [])
    out_dir = (Path(build_dir) if build_dir else root / "build").resolve() / target
    blog = _Log(out_dir / "build.log", log)
    start = time.monotonic()
    blog.line(f"== build {target} {' '.join(names)} at {time.strftime('%Y-%m-%d %H:%M:%S')}",
              echo=False)
    result: dict[str, Path] = {}
    try:
        for name in names:
            result[name] = _build_one(root, out_dir, name,
                                      list(all_images[name]["dirs"]), cflags,
                                      clang, lld, blog)
    except Exception as e:
        blog.line(f"== failed after {time.monotonic() - start:.1f}s: "
                  f"{str(e).splitlines()[0]}", echo=False)
        raise
    else:
        blog.line(f"== done in {time.monotonic() - start:.1f}s", echo=False)
    finally:
        blog.close()
    return result


def _load_config(root: Path) -> dict:
    try:
        from pytool import config  # the lead's module
        return config.load()
    except ImportError:
        import yaml
        return yaml.safe_load((root / "edk2-config.yaml").read_text())


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pytool.build",
                                 description="Build the EFI images.")
    ap.add_argument("--release", action="store_true", help="RELEASE instead of the default target")
    ap.add_argument("images", nargs="*", help="images to build (default: all)")
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    cfg = _load_config(root)
    build_cfg = cfg["build"]
    target = "RELEASE" if args.release else build_cfg.get("default_target", "DEBUG")
    try:
        out = build_images(root, build_cfg, target, args.images or None)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
