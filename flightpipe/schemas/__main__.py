"""Regenerate `flight-event.schema.json` from the contract (a test checks it is current).

`python -m flightpipe.schemas --release COMMIT` also records the contract as released from
COMMIT (`releases/<flightpipe.__version__>.json`): run it when a release is cut, with `__version__`
(and pyproject's version) set to that release; then move them on to the next `.dev0`.
"""

import argparse
import json
from pathlib import Path

from flightpipe.contract import json_schema
from flightpipe.schemas import snapshot

parser = argparse.ArgumentParser(prog="python -m flightpipe.schemas")
parser.add_argument("--release", metavar="COMMIT", help="also snapshot the columns as released")
args = parser.parse_args()
path = Path(__file__).with_name("flight-event.schema.json")
path.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
print(f"wrote {path}")
if args.release:
    try:
        print(f"wrote {snapshot(args.release)}")
    except (ValueError, FileExistsError) as exc:
        raise SystemExit(f"python -m flightpipe.schemas: {exc}") from None
