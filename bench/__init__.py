"""Helpers of ``scripts/bench``: side-by-side benchmarks of statestore against the local broker.

Each measurement that needs its own process (so its RSS and CPU are its own) is a
module run as ``python -m bench.<module>`` that prints one JSON object on its last
line of stdout; ``scripts/bench`` starts them, samples the RSS and CPU of their
process trees and writes the results and ``docs/benchmarks.md``.
"""
