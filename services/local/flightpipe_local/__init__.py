"""What runs on one machine above both services: `flightpipe serve`, the demo and the CLI.

The layers, top to bottom (tests/unit/test_layering.py keeps them so):
* `flightpipe_local`: the `flightpipe` command line (`cli`), the all-in-one stack of
  `flightpipe serve` (`serve`, `http_server`) and `make run` (`demo`); it composes both services;
* `flightpipe_api`, `flightpipe_subscriber`: the two services; neither imports the other;
* `flightpipe`: the core (contract, settings, ports, adapters, telemetry, composition root),
  which imports nothing above it.
"""
