"""The multi-item fulfilment benchmark (Jasin & Sinha 2015; Ma 2023): `python -m
bench.fulfilment`. instance.py generates the set-up and its DLP bound; runner.py
drives the arrivals through allocd's allocation path under a policy."""
