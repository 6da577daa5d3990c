"""``python -m kiln ...``: Kiln's command line (:mod:`kiln.cli`)."""

from kiln.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
