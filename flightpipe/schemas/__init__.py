"""Published schemas; `python -m flightpipe.schemas` rewrites them from the contract."""
