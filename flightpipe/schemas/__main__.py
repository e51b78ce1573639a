"""Regenerate `flight-event.schema.json` from the contract (a test checks it is current)."""

import json
from pathlib import Path

from flightpipe.contract import json_schema

path = Path(__file__).with_name("flight-event.schema.json")
path.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
print(f"wrote {path}")
