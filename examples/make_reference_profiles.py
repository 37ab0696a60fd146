"""Regenerate the spec-scaled reference profiles in profiles/ from the measured one.

    python examples/make_reference_profiles.py            # writes profiles/<machine>.json
    python examples/make_reference_profiles.py --check    # exit 1 if a file is out of date

The measured input is profiles/cpu-2core-resnet20.json (made with
``hetsam profile --model resnet20 --batch-size 128 --out profiles/cpu-2core-resnet20.json``);
the machines and their specs are ``hetsam.cost.specscale.REFERENCE_MACHINES``. Deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hetsam.cost.specscale import MEASURED_REFERENCE, reference_machines  # noqa: E402

PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files on disk")
    args = parser.parse_args(argv)
    stale = []
    for stem, prof in reference_machines(PROFILES / f"{MEASURED_REFERENCE[0]}.json").items():
        path = PROFILES / f"{stem}.json"
        text = prof.to_json() + "\n"
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
            continue
        prof.save(path)
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python examples/make_reference_profiles.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
