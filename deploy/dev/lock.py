"""Write the container's pinned runtime dependencies from the venv: deploy/requirements.lock.

    .venv/bin/python deploy/dev/lock.py            # rewrite deploy/requirements.lock
    .venv/bin/python deploy/dev/lock.py --check    # exit 1 if a runtime dependency is unpinned

Starts at the `blauweknop` distribution's runtime requirements (no extras, markers evaluated
for Linux) and follows them through the installed distributions, pinning each at the version
installed here, so the image runs exactly what the tests ran.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
ENVIRONMENT = {"sys_platform": "linux", "platform_system": "Linux", "extra": ""}


def closure(root: str = "blauweknop") -> dict[str, str]:
    pinned: dict[str, str] = {}
    todo = [Requirement(r) for r in distribution(root).requires or ()]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue
        name = canonicalize_name(req.name)
        extras = sorted(req.extras)
        if name in pinned and not extras:
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            sys.exit(f"{req.name} is required but not installed in this venv: run make")
        pinned[name] = dist.version
        for extra in ["", *extras]:
            for sub in dist.requires or ():
                sub_req = Requirement(sub)
                env = {**ENVIRONMENT, "extra": extra}
                if sub_req.marker is None and extra:
                    continue
                if sub_req.marker is None or sub_req.marker.evaluate(env):
                    sub_req.marker = None  # evaluated here, with this extra
                    todo.append(sub_req)
    return pinned


def render(pinned: dict[str, str]) -> str:
    lines = [
        "# The container's runtime dependencies, pinned from the tested venv.",
        "# Regenerate: .venv/bin/python deploy/dev/lock.py  (see docs/operations.md)",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pinned.items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render(closure())
    if args.check:
        if LOCK.read_text() != text:
            print("deploy/requirements.lock differs from this venv", file=sys.stderr)
            return 1
        return 0
    LOCK.write_text(text)
    print(f"wrote {LOCK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
